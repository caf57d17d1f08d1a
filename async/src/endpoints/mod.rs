//! The endpoints beyond chat, FIM, embeddings, models and moderations, one module per
//! group, each an `impl Client` of thin methods over the core's requests and replies.

mod agents;
mod audio;
mod batch;
mod classifiers;
mod ocr;
