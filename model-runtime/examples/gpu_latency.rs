//! Per-prompt latency of prefill, forced-choice scoring and greedy decoding on any device:
//! the GPU timing run of issue 3.
//!
//! ```text
//! cargo build --release -p model-runtime --features cuda --example gpu_latency
//! gpu_latency random <qwen3-0.6b|qwen2.5-0.5b> <cpu|cuda> [repeats]
//! gpu_latency gguf <file.gguf> <cpu|cuda> <quantized|dequantized> [repeats]
//! ```
//! Random models use 170 fixed token ids and report `weights=random` (timing only, no
//! accuracy). GGUF models use the task prompt (docs/EVALUATION.md) in their chat template. Every
//! timed step reads its result back to the host, which synchronises the device.

use model_runtime::candle_core::{DType, Device};
use model_runtime::{
    Arch, ChatTemplate, GenerateParams, LoadOptions, Model, ModelConfig, Tokenizer, WeightsMode,
    forced_choice,
};
use std::time::Instant;

const QUESTION: &str = "Accurately answer the following question:\n\nWhich of these is a renewable \
resource?\n\nChoices:\nA. coal\nB. natural gas\nC. wind\nD. oil\n\nInstructions:\n- Carefully read \
the question and all options.\n- Select the single most correct answer.\n- Respond ONLY in the \
following format: \"The correct answer is A/B/C/D\".\n- Do not include any explanations, additional \
text, or punctuation besides the answer.";

const USAGE: &str = "usage: gpu_latency random <qwen3-0.6b|qwen2.5-0.5b> <cpu|cuda> [repeats] | \
gguf <file> <cpu|cuda> <quantized|dequantized> [repeats]";

fn device(name: &str) -> Result<(Device, DType), Box<dyn std::error::Error>> {
    match name {
        "cpu" => Ok((Device::Cpu, DType::F32)),
        "cuda" => Ok((Device::new_cuda(0)?, DType::BF16)),
        _ => Err(USAGE.into()),
    }
}

/// Median, min and max of a sample in milliseconds.
fn stats(mut secs: Vec<f64>) -> String {
    secs.sort_by(f64::total_cmp);
    match (secs.first(), secs.last()) {
        (Some(min), Some(max)) => format!(
            "median {:8.2} ms  min {:8.2}  max {:8.2}",
            secs[secs.len() / 2] * 1e3,
            min * 1e3,
            max * 1e3
        ),
        _ => "no runs".to_string(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let load_start = Instant::now();
    let (model, ids, letters, repeats) = match args.as_slice() {
        [kind, what, dev, rest @ ..] if kind == "random" => {
            let config = match what.as_str() {
                "qwen3-0.6b" => ModelConfig::qwen3_0_6b(),
                "qwen2.5-0.5b" => ModelConfig::qwen2_5_0_5b(),
                _ => return Err(USAGE.into()),
            };
            let (device, dtype) = device(dev)?;
            let model = Model::random(&config, 0, &device, dtype)?;
            let ids: Vec<u32> = (0..170u32).map(|i| (i * 7919) % 150_000).collect();
            let repeats = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(10);
            (model, ids, vec![32u32, 33, 34, 35], repeats)
        }
        [kind, path, dev, mode, rest @ ..] if kind == "gguf" => {
            let weights = match mode.as_str() {
                "quantized" => WeightsMode::Quantized,
                "dequantized" => WeightsMode::Dequantized,
                _ => return Err(USAGE.into()),
            };
            let (device, dtype) = device(dev)?;
            let path = std::path::Path::new(path);
            let opts = LoadOptions {
                device,
                dtype,
                weights,
            };
            let model = Model::from_gguf(path, &opts)?;
            let template = match model.config().arch {
                Arch::Qwen2 => ChatTemplate::Qwen2,
                Arch::Qwen3 => ChatTemplate::Qwen3,
                Arch::Llama => ChatTemplate::SmolLm2,
                Arch::Mistral => ChatTemplate::Mistral,
            };
            let tokenizer = Tokenizer::from_gguf_file(path)?;
            let ids = tokenizer.encode(&template.prompt(QUESTION, "The correct answer is"))?;
            let letters = [" A", " B", " C", " D"]
                .iter()
                .map(|l| {
                    let ids = tokenizer.encode(l)?;
                    ids.last()
                        .copied()
                        .ok_or_else(|| "empty letter encoding".into())
                })
                .collect::<Result<Vec<u32>, Box<dyn std::error::Error>>>()?;
            let repeats = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(10);
            (model, ids, letters, repeats)
        }
        _ => return Err(USAGE.into()),
    };
    println!("{}", model.describe());
    println!(
        "load {:.2} s, prompt tokens {}, repeats {repeats}",
        load_start.elapsed().as_secs_f64(),
        ids.len()
    );
    let (mut prefill, mut score, mut decode) = (Vec::new(), Vec::new(), Vec::new());
    let params = GenerateParams {
        max_new_tokens: 16,
        stop_ids: Vec::new(),
    };
    let mut last = None;
    for i in 0..=repeats {
        let t = Instant::now();
        let (logits, _cache) = model.prefill(&model.ids_tensor(&ids)?)?;
        let _ = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let t_prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let choice = forced_choice(&model.next_token_logits(&ids)?, &letters)?;
        let t_score = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let generation = model.generate_greedy(&ids, &params)?;
        let t_gen = t.elapsed().as_secs_f64();
        if i > 0 {
            prefill.push(t_prefill);
            score.push(t_score);
            decode.push(t_gen / generation.tokens.len().max(1) as f64);
        }
        last = Some((choice, generation.tokens.len()));
    }
    println!("prefill            {}", stats(prefill));
    println!("forced choice      {}", stats(score));
    println!("greedy, per token  {}", stats(decode));
    if let Some((choice, n)) = last {
        println!(
            "last: prediction {} margin {:.3}, generated {n} tokens",
            ["A", "B", "C", "D"][choice.prediction.min(3)],
            choice.margin
        );
    }
    Ok(())
}
