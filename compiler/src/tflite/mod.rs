//! The TFLite flatbuffer format: the one reader ([`read`], through the
//! accessors generated from the official `schema.fbs`), the importer of
//! int8 models ([`import`]), the writer ([`write`], through the same
//! generated types), the dump behind `mnet inspect` ([`inspect`]), and the
//! builtin operator codes they use.

pub mod import;
pub mod inspect;
pub mod read;
pub mod write;

/// The builtin operator codes mnet reads or writes, from the generated
/// schema.
pub mod opcode {
    use mnet_tflite_schema::BuiltinOperator as B;
    pub const ADD: i32 = B::Add as i32;
    pub const AVERAGE_POOL_2D: i32 = B::AveragePool2d as i32;
    pub const CONCATENATION: i32 = B::Concatenation as i32;
    pub const CONV_2D: i32 = B::Conv2d as i32;
    pub const DEPTHWISE_CONV_2D: i32 = B::DepthwiseConv2d as i32;
    pub const DEQUANTIZE: i32 = B::Dequantize as i32;
    pub const FULLY_CONNECTED: i32 = B::FullyConnected as i32;
    pub const LOGISTIC: i32 = B::Logistic as i32;
    pub const MAX_POOL_2D: i32 = B::MaxPool2d as i32;
    pub const MUL: i32 = B::Mul as i32;
    pub const RELU: i32 = B::Relu as i32;
    pub const RELU6: i32 = B::Relu6 as i32;
    pub const RESHAPE: i32 = B::Reshape as i32;
    pub const SOFTMAX: i32 = B::Softmax as i32;
    pub const CUSTOM: i32 = B::Custom as i32;
    pub const GATHER: i32 = B::Gather as i32;
    pub const PAD: i32 = B::Pad as i32;
    pub const MEAN: i32 = B::Mean as i32;
    pub const SQUEEZE: i32 = B::Squeeze as i32;
    pub const STRIDED_SLICE: i32 = B::StridedSlice as i32;
    pub const CAST: i32 = B::Cast as i32;
    pub const PADV2: i32 = B::Padv2 as i32;
    pub const SHAPE: i32 = B::Shape as i32;
    pub const REDUCE_PROD: i32 = B::ReduceProd as i32;
    pub const PACK: i32 = B::Pack as i32;
    pub const LEAKY_RELU: i32 = B::LeakyRelu as i32;
    pub const QUANTIZE: i32 = B::Quantize as i32;
    pub const HARD_SWISH: i32 = B::HardSwish as i32;
}

/// The schema name of a builtin operator code.
pub fn operator_name(code: i32) -> Option<&'static str> {
    mnet_tflite_schema::builtin_operator_name(code)
}
