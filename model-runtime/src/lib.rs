//! Decoder runtime on candle with an explicit KV cache: Qwen2, Qwen3, Llama, Mistral from HF folders or GGUF.
