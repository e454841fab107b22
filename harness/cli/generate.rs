//! `quantbench generate`: one model at one precision generates once, and prints the
//! text, the token ids and the weight bytes — a check before benchmarking, not a
//! measurement.

use std::process::ExitCode;

use anyhow::Result;

use quantbench::model::{self, ModelSpec};
use quantbench::precision::{Policy, Precision, Quantization, RestDtype};
use quantbench::run::clock;
use quantbench::run::generate::{generate, GenerateOptions, NoObserver};
use quantbench::scenario::DeviceChoice;

use super::outln;

#[derive(clap::Args)]
pub struct Args {
    /// Model spec: synthetic:NAME[@SEED], hf:ORG/NAME[@REVISION], hf:ORG/NAME/FILE.gguf, a .gguf file, or a directory.
    #[arg(long, default_value = "synthetic:gpt2")]
    model: ModelSpec,
    /// Precision: f32, f16, bf16, q8_0 (int8), q4_0 (int4), q4_1, q5_0, q5_1, q2_k ... q6_k, or native (a GGUF file as stored).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Allow a precision other than native from an already quantized GGUF (dequantized, then quantized again).
    #[arg(long)]
    requantize: bool,
    /// An importance matrix (llama-imatrix's GGUF or .dat) for the quantizer, used as llama-quantize uses it.
    #[arg(long)]
    imatrix: Option<std::path::PathBuf>,
    /// What the precision applies to: all (every weight matrix) or linear (the block's linear layers).
    #[arg(long, default_value = "all")]
    policy: Policy,
    /// The dtype of the weights the precision does not apply to: f32, f16, or auto (f16 beside f16 and bitsandbytes' formats, else f32).
    #[arg(long, default_value = "auto")]
    rest: RestDtype,
    /// The text to continue.
    #[arg(long, default_value = "Once upon a time")]
    prompt: String,
    /// Exactly this many tokens are generated (end-of-text does not stop it).
    #[arg(long, default_value_t = 50)]
    new_tokens: usize,
    /// Stop early if the model emits <|endoftext|>.
    #[arg(long)]
    stop_at_eos: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

pub fn main(args: Args) -> Result<ExitCode> {
    let q = Quantization::new(args.precision)
        .with_policy(args.policy)
        .with_rest(args.rest);
    let mut source = model::resolve(&args.model)?;
    source.requantize = args.requantize;
    if let Some(path) = &args.imatrix {
        source.imatrix = Some(std::sync::Arc::new(
            quantbench::format::imatrix::Imatrix::read(path)?,
        ));
    }
    // Check the prompt and the token count against the context before loading.
    let tokenizer = source.tokenizer()?;
    quantbench::run::generate::check_fits(
        tokenizer.encode_prompt(&args.prompt)?.len(),
        args.new_tokens,
        source.config.context_length(),
    )?;
    let (device, device_name) = args.device.open()?;
    model::check_memory(&source, q, &device)?;
    let t0 = clock::synced_now(&device)?;
    let loaded = model::load(&source, q, &device)?;
    let load_s = clock::synced_seconds_since(&device, t0)?;
    let ids = loaded.tokenizer.encode_prompt(&args.prompt)?;
    let opts = GenerateOptions {
        new_tokens: args.new_tokens,
        stop_at_end_of_text: args.stop_at_eos,
    };
    let g = generate(&loaded, &ids, opts, &mut NoObserver)?;
    // The sum of the generation's steps, each timed with the device synchronised.
    let gen_s = g.total_seconds();
    let fp = &loaded.footprint;
    outln!("model:        {}", loaded.name);
    outln!("quantization: {q}");
    outln!("device:       {device_name}");
    outln!("prompt ids:   {:?}", g.prompt_ids);
    outln!("new ids:      {:?}", g.new_ids);
    outln!("text:         {:?}", g.text);
    outln!(
        "weights:      {} bytes ({:.1} MB, {:.3} bits/weight over {} parameters)",
        fp.total_bytes(),
        fp.total_bytes() as f64 / 1e6,
        fp.bits_per_weight(),
        fp.parameters()
    );
    outln!(
        "  embeddings {} B, linear {} B, norms+biases {} B",
        fp.embeddings.bytes,
        fp.linear.bytes,
        fp.norms_biases.bytes
    );
    for f in &fp.fallbacks {
        outln!("  note: {f}");
    }
    outln!(
        "timing:       load {load_s:.2} s; {} tokens in {gen_s:.3} s (prefill {:.1} ms, decode {} tok/s); one unwarmed run, use `quantbench run` for measurements",
        g.new_ids.len(),
        g.prefill_seconds() * 1e3,
        g.decode_tokens_per_second()
            .map(|t| format!("{t:.1}"))
            .unwrap_or_else(|| "-".into())
    );
    Ok(ExitCode::SUCCESS)
}
