//! The prompt limits both services enforce, with one error type: text over
//! `limits.max_prompt_bytes` is refused before anything tokenizes it, token ids over
//! `limits.max_prompt_tokens` after. Both services report either as INVALID_ARGUMENT with the
//! label `prompt_too_long` (docs/STATUS_CODES.md).

/// A prompt over one of the configured limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptLimit {
    /// The prompt text is longer than `limits.max_prompt_bytes` (checked before tokenizing).
    #[error("prompt text has {bytes} bytes ({what}), limit {max} (limits.max_prompt_bytes)")]
    Bytes {
        /// UTF-8 bytes of the prompt text.
        bytes: usize,
        /// Limit.
        max: usize,
        /// Which text was counted.
        what: &'static str,
    },
    /// The prompt is longer than `limits.max_prompt_tokens` (after tokenizing).
    #[error("prompt has {tokens} tokens, limit {max} (limits.max_prompt_tokens)")]
    Tokens {
        /// Prompt tokens.
        tokens: usize,
        /// Limit.
        max: usize,
    },
}

impl PromptLimit {
    /// The error label both services attach (`kvwire-error-type`).
    pub const LABEL: &'static str = "prompt_too_long";

    /// Refuses `bytes` of prompt text (`what` names it) over `max`.
    pub fn check_bytes(bytes: usize, max: usize, what: &'static str) -> Result<(), PromptLimit> {
        if bytes > max {
            Err(PromptLimit::Bytes { bytes, max, what })
        } else {
            Ok(())
        }
    }

    /// Refuses a prompt of `tokens` token ids over `max`.
    pub fn check_tokens(tokens: usize, max: usize) -> Result<(), PromptLimit> {
        if tokens > max {
            Err(PromptLimit::Tokens { tokens, max })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PromptLimit;

    #[test]
    fn limits_are_inclusive_and_name_what_was_counted() {
        assert_eq!(PromptLimit::check_bytes(10, 10, "text"), Ok(()));
        let e = PromptLimit::check_bytes(11, 10, "text").unwrap_err();
        assert_eq!(
            e.to_string(),
            "prompt text has 11 bytes (text), limit 10 (limits.max_prompt_bytes)"
        );
        assert_eq!(PromptLimit::check_tokens(8192, 8192), Ok(()));
        let e = PromptLimit::check_tokens(9000, 8192).unwrap_err();
        assert_eq!(
            e.to_string(),
            "prompt has 9000 tokens, limit 8192 (limits.max_prompt_tokens)"
        );
    }
}
