//! A model written for other tools to run the same weights: [`hf`] in the Hugging Face
//! layout (config.json, model.safetensors in f32, tokenizer files), [`gguf`] as one GGUF
//! file at a precision, the very blocks quantbench measures.

pub mod gguf;
pub mod hf;
