//! One tokenizer type over two implementations: the GPT-2 BPE that tiktoken-rs ships
//! (r50k_base, used by synthetic models, needs no files) and Hugging Face `tokenizers`
//! (tokenizer.json, or vocab.json + merges.txt, for checkpoints on disk).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use tiktoken_rs::CoreBPE;

use crate::error::InputError;

/// GPT-2's `<|endoftext|>`.
pub const END_OF_TEXT: u32 = 50256;

/// The size of GPT-2's vocabulary.
pub const GPT2_VOCAB: u32 = 50257;

pub enum Tokenizer {
    /// GPT-2's BPE from tiktoken-rs (r50k_base).
    Gpt2Bpe(Box<CoreBPE>),
    /// A Hugging Face tokenizer loaded from files.
    HuggingFace(Box<tokenizers::Tokenizer>),
    /// Another tokenizer's ids folded into a smaller vocabulary (id mod the size): for
    /// synthetic models whose real tokenizer is not at hand and whose vocabulary is
    /// smaller than GPT-2's.
    Folded(Box<Tokenizer>, u32),
}

impl Tokenizer {
    /// The real GPT-2 tokenizer, offline.
    pub fn gpt2() -> Result<Self> {
        let bpe = tiktoken_rs::r50k_base().context("building tiktoken-rs' r50k_base")?;
        Ok(Tokenizer::Gpt2Bpe(Box::new(bpe)))
    }

    /// tokenizer.json, else vocab.json + merges.txt, from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        use crate::fsutil::{exists_at_all, not_a_regular_file, read_text};
        // Tokenizer files of real models are a few megabytes; 256 MB bounds a hostile one.
        const MAX: u64 = 256 << 20;
        let json = dir.join("tokenizer.json");
        if exists_at_all(&json) {
            let text = read_text(&json, "tokenizer.json", MAX)?;
            let t: tokenizers::Tokenizer = text.parse().map_err(|e| {
                InputError::new(format!(
                    "{}: not a valid tokenizer.json: {e}",
                    json.display()
                ))
            })?;
            return Ok(Tokenizer::HuggingFace(Box::new(t)));
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if exists_at_all(&vocab) && exists_at_all(&merges) {
            for f in [&vocab, &merges] {
                if let Some(problem) = not_a_regular_file(f) {
                    crate::bad_input!("{} {problem}", f.display());
                }
                let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
                if len > MAX {
                    crate::bad_input!(
                        "{} is {len} bytes, more than a tokenizer file may be ({MAX})",
                        f.display()
                    );
                }
            }
            return Ok(Tokenizer::HuggingFace(Box::new(from_vocab_merges(
                &vocab, &merges,
            )?)));
        }
        Err(InputError::new(format!(
            "{}: no tokenizer: expected tokenizer.json, or vocab.json and merges.txt",
            dir.display()
        ))
        .into())
    }

    /// This tokenizer's ids folded into a vocabulary of `vocab` ids.
    pub fn folded(self, vocab: u32) -> Self {
        Tokenizer::Folded(Box::new(self), vocab.max(1))
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Folded(t, vocab) => {
                Ok(t.encode(text)?.into_iter().map(|id| id % vocab).collect())
            }
            Tokenizer::Gpt2Bpe(b) => Ok(b.encode_ordinary(text)),
            Tokenizer::HuggingFace(t) => Ok(t
                .encode(text, false)
                .map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?
                .get_ids()
                .to_vec()),
        }
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Folded(t, _) => t.decode(ids),
            Tokenizer::Gpt2Bpe(b) => {
                // A synthetic model with a larger vocabulary than GPT-2's (Llama 3's
                // 128,256, Qwen's 151,936) generates ids GPT-2 has no text for: each is
                // shown as `<id N>`, between the decoded runs of known ids.
                let mut bytes = Vec::new();
                for run in ids.chunk_by(|a, b| (*a < GPT2_VOCAB) == (*b < GPT2_VOCAB)) {
                    if run[0] < GPT2_VOCAB {
                        bytes.extend(
                            b.decode_bytes(run)
                                .map_err(|e| anyhow::anyhow!("decoding token ids: {e}"))?,
                        );
                    } else {
                        for id in run {
                            bytes.extend(format!("<id {id}>").into_bytes());
                        }
                    }
                }
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Tokenizer::HuggingFace(t) => t
                .decode(ids, false)
                .map_err(|e| anyhow::anyhow!("decoding token ids: {e}")),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Tokenizer::Gpt2Bpe(_) => {
                "gpt2 bpe (tiktoken-rs r50k_base; ids beyond its 50,257 shown as <id N>)".into()
            }
            Tokenizer::HuggingFace(_) => "huggingface tokenizers".into(),
            Tokenizer::Folded(t, vocab) => {
                format!(
                    "{}, ids folded modulo {vocab} (the model's vocab_size)",
                    t.name()
                )
            }
        }
    }
}

fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<tokenizers::Tokenizer> {
    use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| {
            InputError::new(format!(
                "{} / {}: not a valid BPE vocabulary and merges: {e}",
                vocab.display(),
                merges.display()
            ))
        })?;
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    t.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(t)
}

/// GPT-2's reversible map from bytes to printable characters (as in its encoder.py).
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid code point")
        };
    }
    table
}

/// Writes GPT-2's vocab.json, merges.txt and tokenizer.json into `dir`, rebuilt from
/// tiktoken-rs' r50k_base ranks (each merge recovered by running BPE on a token with
/// the ranks below its own, as transformers' tiktoken converter does).
pub fn write_gpt2_files(dir: &Path) -> Result<()> {
    let bpe = tiktoken_rs::r50k_base().context("building r50k_base")?;
    let table = bytes_to_unicode();
    let show = |bytes: &[u8]| bytes.iter().map(|&b| table[b as usize]).collect::<String>();
    let mut ranks: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut by_rank = Vec::with_capacity(END_OF_TEXT as usize);
    for r in 0..END_OF_TEXT {
        let bytes = bpe
            .decode_bytes(&[r])
            .map_err(|e| anyhow::anyhow!("r50k_base has no token {r}: {e}"))?;
        ranks.insert(bytes.clone(), r);
        by_rank.push(bytes);
    }
    let mut vocab: BTreeMap<String, u32> = BTreeMap::new();
    let mut merges = String::from("#version: 0.2\n");
    for (r, bytes) in by_rank.iter().enumerate() {
        vocab.insert(show(bytes), r as u32);
        if bytes.len() > 1 {
            let parts = bpe_with_max_rank(&ranks, bytes, r as u32);
            anyhow::ensure!(
                parts.len() == 2,
                "token {r} does not split into one merge ({} parts)",
                parts.len()
            );
            merges.push_str(&format!("{} {}\n", show(&parts[0]), show(&parts[1])));
        }
    }
    vocab.insert("<|endoftext|>".to_string(), END_OF_TEXT);
    let vocab_path = dir.join("vocab.json");
    let merges_path = dir.join("merges.txt");
    std::fs::write(&vocab_path, serde_json::to_string(&vocab)?)
        .with_context(|| format!("writing {}", vocab_path.display()))?;
    std::fs::write(&merges_path, merges)
        .with_context(|| format!("writing {}", merges_path.display()))?;
    let mut t = from_vocab_merges(&vocab_path, &merges_path)?;
    t.add_special_tokens([tokenizers::AddedToken::from("<|endoftext|>", true)])
        .map_err(|e| anyhow::anyhow!("adding <|endoftext|>: {e}"))?;
    let json_path = dir.join("tokenizer.json");
    t.save(&json_path, false)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", json_path.display()))?;
    let config = serde_json::json!({
        "model_max_length": 1024,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "add_prefix_space": false,
        "tokenizer_class": "GPT2Tokenizer"
    });
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    Ok(())
}

fn bpe_with_max_rank(ranks: &HashMap<Vec<u8>, u32>, token: &[u8], max_rank: u32) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = token.iter().map(|&b| vec![b]).collect();
    loop {
        let mut best: Option<(usize, u32)> = None;
        for i in 0..parts.len().saturating_sub(1) {
            let joined = [parts[i].as_slice(), parts[i + 1].as_slice()].concat();
            if let Some(&r) = ranks.get(&joined) {
                if best.is_none_or(|(_, br)| r < br) {
                    best = Some((i, r));
                }
            }
        }
        match best {
            Some((i, r)) if r < max_rank => {
                let right = parts.remove(i + 1);
                parts[i].extend(right);
            }
            _ => return parts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_bpe_round_trips_and_knows_famous_ids() {
        let t = Tokenizer::gpt2().unwrap();
        let ids = t.encode("Once upon a time").unwrap();
        assert_eq!(ids, vec![7454, 2402, 257, 640]);
        assert_eq!(t.decode(&ids).unwrap(), "Once upon a time");
        assert_eq!(t.decode(&[END_OF_TEXT]).unwrap(), "<|endoftext|>");
        // Ids beyond GPT-2's vocabulary (a synthetic Llama 3 generates them) are shown,
        // not refused, and the known ones around them still decode.
        assert_eq!(
            t.decode(&[7454, 90555, 128000, 2402]).unwrap(),
            "Once<id 90555><id 128000> upon"
        );
        // Folded into a small vocabulary: every id stays below it.
        let folded = Tokenizer::gpt2().unwrap().folded(1000);
        assert!(folded
            .encode("Once upon a time")
            .unwrap()
            .iter()
            .all(|&id| id < 1000));
        assert!(folded.name().contains("folded modulo 1000"));
    }

    #[test]
    fn exported_files_tokenize_like_tiktoken() {
        let dir = tempfile::tempdir().unwrap();
        write_gpt2_files(dir.path()).unwrap();
        let hf = Tokenizer::from_dir(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
        let vm = Tokenizer::from_dir(dir.path()).unwrap();
        let tk = Tokenizer::gpt2().unwrap();
        for text in [
            "Once upon a time",
            "Hello, world! It's 2026 and the café's naïve ümlaut costs €3.50.\n\n  indented\tcode();",
            "    many   spaces   ",
        ] {
            let want = tk.encode(text).unwrap();
            assert_eq!(hf.encode(text).unwrap(), want, "tokenizer.json on {text:?}");
            assert_eq!(vm.encode(text).unwrap(), want, "vocab+merges on {text:?}");
            assert_eq!(hf.decode(&want).unwrap(), text);
        }
    }
}
