//! Chat templates of the supported families, reproduced from their Jinja templates
//! (GGUF `tokenizer.chat_template`), with the default system turn where the template
//! adds one, and Qwen3's thinking mode off.

use serde::{Deserialize, Serialize};

/// Qwen2/2.5 default system turn (added when the conversation has none).
pub const QWEN2_DEFAULT_SYSTEM: &str =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
/// SmolLM2-Instruct default system turn.
pub const SMOLLM2_DEFAULT_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub content: String,
}

impl Message {
    /// A user turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// A system turn.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
}

/// A family's chat format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatTemplate {
    /// Qwen2 / Qwen2.5 ChatML with the "You are Qwen" default system turn.
    Qwen2,
    /// Qwen3 ChatML, no default system turn, thinking off (empty think block).
    Qwen3,
    /// SmolLM2 ChatML with its default system turn.
    SmolLm2,
    /// Mistral `[INST]` format (a system turn is prepended to the first user turn).
    Mistral,
}

impl ChatTemplate {
    /// Renders a conversation; with `add_generation_prompt` the text ends where the
    /// assistant's answer starts.
    pub fn render(self, messages: &[Message], add_generation_prompt: bool) -> String {
        match self {
            ChatTemplate::Qwen2 => chatml(
                messages,
                Some(QWEN2_DEFAULT_SYSTEM),
                add_generation_prompt,
                "",
            ),
            ChatTemplate::SmolLm2 => chatml(
                messages,
                Some(SMOLLM2_DEFAULT_SYSTEM),
                add_generation_prompt,
                "",
            ),
            ChatTemplate::Qwen3 => chatml(
                messages,
                None,
                add_generation_prompt,
                "<think>\n\n</think>\n\n",
            ),
            ChatTemplate::Mistral => mistral(messages, add_generation_prompt),
        }
    }

    /// A single user turn followed by the assistant prompt, then `assistant_prefix`
    /// (for example "The correct answer is").
    pub fn prompt(self, user: &str, assistant_prefix: &str) -> String {
        let mut text = self.render(&[Message::user(user)], true);
        text.push_str(assistant_prefix);
        text
    }
}

fn chatml(
    messages: &[Message],
    default_system: Option<&str>,
    add_generation_prompt: bool,
    think: &str,
) -> String {
    let mut out = String::new();
    let has_system = messages.first().is_some_and(|m| m.role == Role::System);
    if let (false, Some(system)) = (has_system, default_system) {
        out.push_str(&format!("<|im_start|>system\n{system}<|im_end|>\n"));
    }
    for m in messages {
        out.push_str(&format!(
            "<|im_start|>{}\n{}<|im_end|>\n",
            m.role.name(),
            m.content
        ));
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
        out.push_str(think);
    }
    out
}

fn mistral(messages: &[Message], _add_generation_prompt: bool) -> String {
    let mut out = String::from("<s>");
    let mut system: Option<&str> = None;
    for m in messages {
        match m.role {
            Role::System => system = Some(&m.content),
            Role::User => {
                let content = match system.take() {
                    Some(s) => format!("{s}\n\n{}", m.content),
                    None => m.content.clone(),
                };
                out.push_str(&format!("[INST] {content} [/INST]"));
            }
            Role::Assistant => out.push_str(&format!("{}</s>", m.content)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_thinking_off() {
        let text = ChatTemplate::Qwen3.prompt("Hi", "");
        assert_eq!(
            text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        );
    }

    #[test]
    fn qwen2_adds_default_system_only_without_one() {
        let text = ChatTemplate::Qwen2.prompt("Hi", "The answer is");
        assert!(text.starts_with(&format!(
            "<|im_start|>system\n{QWEN2_DEFAULT_SYSTEM}<|im_end|>\n"
        )));
        assert!(text.ends_with("<|im_start|>assistant\nThe answer is"));
        let own = ChatTemplate::Qwen2.render(&[Message::system("S"), Message::user("U")], false);
        assert_eq!(
            own,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        );
    }

    #[test]
    fn mistral_inst() {
        let text = ChatTemplate::Mistral.render(&[Message::system("S"), Message::user("U")], true);
        assert_eq!(text, "<s>[INST] S\n\nU [/INST]");
    }
}
