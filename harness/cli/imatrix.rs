//! `quantbench imatrix`: an importance matrix of a model over a text, computed as
//! llama-imatrix computes it and written in its GGUF form (for `--imatrix` here and
//! llama-quantize's `--imatrix`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use quantbench::model::{self, ModelSpec};

use super::outln;

#[derive(clap::Args)]
pub struct Args {
    /// Model spec: synthetic:NAME[@SEED], hf:ORG/NAME[@REVISION], hf:ORG/NAME/FILE.gguf, a .gguf file, or a directory.
    #[arg(long, default_value = "synthetic:gpt2")]
    model: ModelSpec,
    /// The calibration text (UTF-8); default: the project's essay, assets/eval/default.txt.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Where to write the importance matrix (a .gguf file; replaced only with --force).
    #[arg(long)]
    out: PathBuf,
    /// Tokens per chunk (llama-imatrix's -c); the text must give at least two chunks.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// At most this many chunks (llama-imatrix's --chunks; default: as many as the text gives).
    #[arg(long)]
    chunks: Option<usize>,
    /// Collect the output matrix's inputs too (llama-imatrix's --process-output).
    #[arg(long)]
    process_output: bool,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

pub fn main(args: Args) -> Result<ExitCode> {
    if !quantbench::model::source::gguf::is_gguf_path(&args.out) {
        quantbench::bad_input!(
            "--out {}: an importance matrix is written as a GGUF file; name it with the .gguf extension",
            args.out.display()
        );
    }
    if args.out.exists() && !args.force {
        quantbench::bad_input!(
            "--out {} exists; choose another file name, or pass --force to replace it",
            args.out.display()
        );
    }
    let text_path = args.text.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/eval/default.txt")
    });
    let text = std::fs::read_to_string(&text_path)
        .map_err(|e| quantbench::InputError::new(format!("--text {}: {e}", text_path.display())))?;
    let mut source = model::resolve(&args.model)?;
    quantbench::run::interrupt::install_handler()?;
    let r = quantbench::run::imatrix::compute(
        &mut source,
        &text,
        &text_path.display().to_string(),
        (args.ctx, args.chunks),
        args.process_output,
        &args.out,
    )?;
    outln!(
        "{}: importance matrix of {} tensors over {} chunks of {} tokens (the text gave {}), as llama-imatrix computes it",
        args.out.display(),
        r.tensors,
        r.chunks,
        r.ctx,
        r.text_tokens
    );
    Ok(ExitCode::SUCCESS)
}
