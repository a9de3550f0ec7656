//! Per-prompt prefill latency and peak RSS of one model.
//!
//! ```text
//! cargo run --release -p model-runtime --example bench_prefill -- \
//!     gguf <file.gguf> <quantized|dequantized> [repeats]
//! cargo run --release -p model-runtime --example bench_prefill --features cuda -- \
//!     random <qwen3-0.6b|qwen2.5-0.5b> <cpu|cuda> [repeats]
//! ```
//! The prompt is the task prompt (docs/EVALUATION.md) around a fixed ARC-style question inside the
//! model's chat template (about 170 tokens); random models use 170 fixed token ids.

use model_runtime::candle_core::{DType, Device};
use model_runtime::{Arch, ChatTemplate, LoadOptions, Model, ModelConfig, Tokenizer, WeightsMode};
use std::time::Instant;

const QUESTION: &str = "Accurately answer the following question:\n\nA student is trying to identify a mineral \
that has a nonmetallic luster and is black. It can be scratched with a fingernail. The student uses a \
streak plate and finds the streak is black as well. Which of the following is most likely the mineral?\n\n\
Choices:\nA. biotite\nB. graphite\nC. magnetite\nD. hematite\n\nInstructions:\n- Carefully read the question \
and all options.\n- Select the single most correct answer.\n- Respond ONLY in the following format: \"The \
correct answer is A/B/C/D\".\n- Do not include any explanations, additional text, or punctuation besides the answer.";

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench_prefill gguf <file> <quantized|dequantized> [repeats] | random <qwen3-0.6b|qwen2.5-0.5b> <cpu|cuda> [repeats]";
    let (kind, what, mode) = match args.as_slice() {
        [k, w, m, ..] => (k.as_str(), w.as_str(), m.as_str()),
        _ => return Err(usage.into()),
    };
    let repeats: usize = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(3);
    let load_start = Instant::now();
    let (model, ids) = match kind {
        "gguf" => {
            let weights = match mode {
                "quantized" => WeightsMode::Quantized,
                "dequantized" => WeightsMode::Dequantized,
                _ => return Err(usage.into()),
            };
            let path = std::path::Path::new(what);
            let model = Model::from_gguf(
                path,
                &LoadOptions {
                    weights,
                    ..LoadOptions::cpu()
                },
            )?;
            let template = match model.config().arch {
                Arch::Qwen2 => ChatTemplate::Qwen2,
                Arch::Qwen3 => ChatTemplate::Qwen3,
                Arch::Llama => ChatTemplate::SmolLm2,
                Arch::Mistral => ChatTemplate::Mistral,
            };
            let ids = Tokenizer::from_gguf_file(path)?
                .encode(&template.prompt(QUESTION, "The correct answer is"))?;
            (model, ids)
        }
        "random" => {
            let config = match what {
                "qwen3-0.6b" => ModelConfig::qwen3_0_6b(),
                "qwen2.5-0.5b" => ModelConfig::qwen2_5_0_5b(),
                _ => return Err(usage.into()),
            };
            let (device, dtype) = match mode {
                "cpu" => (Device::Cpu, DType::F32),
                "cuda" => (Device::new_cuda(0)?, DType::BF16),
                _ => return Err(usage.into()),
            };
            let model = Model::random(&config, 0, &device, dtype)?;
            let ids = (0..170u32).map(|i| (i * 7919) % 150_000).collect();
            (model, ids)
        }
        _ => return Err(usage.into()),
    };
    println!("{}", model.describe());
    println!(
        "load: {:.2} s, prompt tokens: {}",
        load_start.elapsed().as_secs_f64(),
        ids.len()
    );
    let input = model.ids_tensor(&ids)?;
    let mut times = Vec::new();
    for i in 0..=repeats {
        let t = Instant::now();
        let (logits, _cache) = model.prefill(&input)?;
        // Reading the logits back synchronises the device before the clock stops.
        let _ = logits.to_vec2::<f32>()?;
        let secs = t.elapsed().as_secs_f64();
        if i == 0 {
            println!("warm-up prefill: {secs:.3} s");
        } else {
            times.push(secs);
        }
    }
    times.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        let median = times[times.len() / 2];
        println!(
            "prefill over {repeats} runs: median {median:.3} s, min {min:.3} s, max {max:.3} s"
        );
    }
    println!(
        "RSS now {:.2} GiB, peak {:.2} GiB",
        rss_kib("VmRSS:") as f64 / 1048576.0,
        rss_kib("VmHWM:") as f64 / 1048576.0
    );
    Ok(())
}
