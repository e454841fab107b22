//! `quantbench export`: the model written for other tools, in the Hugging Face layout or
//! as one GGUF file at a precision.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use quantbench::model::{self, ModelSpec};
use quantbench::precision::{Policy, Precision, Quantization};

use super::outln;

#[derive(clap::Args)]
pub struct Args {
    /// Model spec: synthetic:NAME[@SEED], hf:ORG/NAME[@REVISION], hf:ORG/NAME/FILE.gguf, a .gguf file, or a directory.
    #[arg(long, default_value = "synthetic:gpt2")]
    model: ModelSpec,
    /// Where to write: a directory for hf (created; empty unless --force), a .gguf file for gguf.
    #[arg(long)]
    out: PathBuf,
    /// Replace what is there: the files export writes (hf), or the file (gguf).
    #[arg(long)]
    force: bool,
    /// Output format: hf (config.json + model.safetensors in f32 + tokenizer) or gguf (one file, llama.cpp's layout).
    #[arg(long, default_value = "hf")]
    format: Layout,
    /// The precision of a gguf export (f32 ... q2_k, or native: a GGUF source as stored); hf is always f32.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// What the precision applies to in a gguf export: all or linear.
    #[arg(long, default_value = "all")]
    policy: Policy,
    /// Allow a precision other than native from an already quantized GGUF (dequantized, then quantized again).
    #[arg(long)]
    requantize: bool,
    /// An importance matrix (llama-imatrix's GGUF or .dat) for the quantizer, used as llama-quantize uses it.
    #[arg(long)]
    imatrix: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Layout {
    /// config.json + model.safetensors (f32) + tokenizer files.
    Hf,
    /// One GGUF file at a precision, as llama.cpp reads it.
    Gguf,
}

pub fn main(args: Args) -> Result<ExitCode> {
    let mut source = model::resolve(&args.model)?;
    source.requantize = args.requantize;
    if let Some(path) = &args.imatrix {
        source.imatrix = Some(std::sync::Arc::new(
            quantbench::format::imatrix::Imatrix::read(path)?,
        ));
    }
    quantbench::run::interrupt::install_handler()?;
    let out = &args.out;
    match args.format {
        Layout::Hf => {
            if args.precision != Precision::F32 {
                quantbench::bad_input!(
                    "--precision {}: an hf export is always f32 safetensors; use --format gguf to write a precision",
                    args.precision
                );
            }
            model::write::hf::export(&source, out, args.force)?;
            outln!("wrote {} to {}", source.display_name, out.display());
        }
        Layout::Gguf => {
            let q = Quantization::new(args.precision).with_policy(args.policy);
            let done = model::write::gguf::export_gguf(&source, q, out, args.force)?;
            outln!(
                "wrote {} at {} to {} ({} tensors, {} bytes)",
                source.display_name,
                args.precision,
                out.display(),
                done.tensors,
                done.file_bytes
            );
            for (ty, bytes) in &done.bytes_by_type {
                outln!("  {ty:<6} {bytes:>12} bytes");
            }
            for n in &done.notes {
                outln!("  note: {n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
