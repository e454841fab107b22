//! `quantbench list`: the engines, the precisions, the model presets by architecture, the real models
//! and the scenarios in scenarios/.

use std::process::ExitCode;

use anyhow::Result;

use quantbench::model::source::spec;
use quantbench::precision::Precision;
use quantbench::scenario::{self, Scenario};

use super::outln;

pub fn main() -> Result<ExitCode> {
    engines();
    precisions();
    presets();
    real_models();
    scenarios();
    Ok(ExitCode::SUCCESS)
}

fn precisions() {
    outln!("precisions (bits per weight of the format):");
    for p in Precision::ALL {
        let aliases = if p.aliases().is_empty() {
            String::new()
        } else {
            format!("  also: {}", p.aliases().join(", "))
        };
        let line = format!(
            "  {:<16} {:>7.4}  {:<12}{aliases}",
            p.name(),
            p.bits_per_weight(),
            p.family().name()
        );
        outln!("{}", line.trim_end());
    }
    outln!(
        "  (the int8 formats' row / tensor scales and double quantization's second level are per matrix: the records give each model's exact bits per weight)"
    );
    outln!(
        "  {:<16} {:>7}  file          also: {}; a GGUF file's tensors as stored (bits per weight: the file's)",
        Precision::Native.name(),
        "-",
        Precision::Native.aliases().join(", ")
    );
}

fn engines() {
    use quantbench::engine::EngineKind;
    outln!("engines (--engine, engines = [...]):");
    for e in EngineKind::ALL {
        let what = e.about();
        let built = if e.is_built() {
            ""
        } else {
            " [not in this build: --features llama-cpp]"
        };
        outln!("  {:<16} {what}{built}", e.name());
    }
    outln!(
        "  llama-quantize's mixes, made by both engines (quantbench's byte for byte as llama-quantize's; q2_k_s, iq3_xs, iq3_xxs, iq2_* and iq1_* need --imatrix, as llama-quantize says): {}\n",
        quantbench::format::mix::Mix::ALL.map(|m| m.name()).join(", ")
    );
}

fn presets() {
    outln!("\nmodel presets (offline, synthetic weights), by architecture:");
    for arch in quantbench::model::arch::ARCHITECTURES {
        outln!("  {}:", arch.title);
        for p in arch.presets {
            let c = p.config();
            outln!(
                "    synthetic:{:<15} [{}] {} ({} parameters)",
                p.name,
                c.architecture(),
                p.about,
                c.parameter_count()
            );
        }
    }
}

fn real_models() {
    outln!("\nreal models (bash scripts/fetch-models.sh downloads them):");
    for k in spec::KNOWN_FILES.iter() {
        let path = spec::models_dir().join(k.file);
        let here = std::fs::metadata(&path).is_ok_and(|m| m.len() == k.bytes);
        outln!(
            "    {:<25} {} ({})",
            k.name,
            k.about,
            if here {
                format!("at {}", path.display())
            } else {
                "not downloaded".to_string()
            }
        );
    }
    outln!(
        "\nother models: hf:ORG/NAME[@REVISION], hf:ORG/NAME/FILE.gguf, a .gguf file, or a directory in the Hugging Face layout"
    );
}

fn scenarios() {
    outln!("\nscenarios (scenarios/):");
    for path in scenario::list_dir(std::path::Path::new("scenarios")) {
        match Scenario::load(&path) {
            Ok(s) => outln!(
                "  {:<34} {} [{}] {}",
                path.display(),
                s.model,
                s.precisions
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                s.description.unwrap_or_default()
            ),
            Err(e) => outln!("  {:<34} invalid: {e}", path.display()),
        }
    }
}
