//! Backends: the int8 network as a TFLite flatbuffer ([`tflite`]) and as
//! ahead-of-time C.

pub mod tflite;
