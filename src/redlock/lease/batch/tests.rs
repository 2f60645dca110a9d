//! Tests of the batched extension.
