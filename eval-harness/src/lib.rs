//! Evaluation harness: dataset loaders, the SPEC prompt, answer extraction, letter/rank/generation scoring.
