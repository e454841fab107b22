//! Where a model comes from: [`spec`] resolves a model spec (a directory in the Hugging
//! Face layout, the hub, a GGUF file, a synthetic preset) into a [`spec::ModelSource`];
//! [`weights`] streams safetensors tensor by tensor into matrices at a precision and
//! counts their bytes; [`gguf_header`] reads and checks a GGUF file's header and
//! [`gguf`] turns it into a config, tensors and a tokenizer; [`synthetic`] draws seeded
//! weights; [`tokenizer`] builds the tokenizer each source carries.

pub mod gguf;
pub mod gguf_header;
pub mod spec;
pub mod synthetic;
pub mod tokenizer;
pub mod weights;
