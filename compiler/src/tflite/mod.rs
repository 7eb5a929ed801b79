//! The TFLite flatbuffer format: the writer ([`write`]), the bounds-checked
//! reader behind `mnet inspect` ([`inspect`]), and the one table of the
//! builtin operator codes and option tags both use (`schema.fbs`).

pub mod inspect;
pub mod write;

macro_rules! operators {
    ($($name:ident = $code:expr),* $(,)?) => {
        /// Builtin operator codes.
        pub mod opcode {
            $(pub const $name: i32 = $code;)*
        }

        /// (code, schema name) of every builtin operator mnet writes or
        /// names.
        pub const OPERATORS: &[(i32, &str)] = &[$(($code, stringify!($name))),*];
    };
}

operators! {
    ADD = 0,
    AVERAGE_POOL_2D = 1,
    CONCATENATION = 2,
    CONV_2D = 3,
    DEPTHWISE_CONV_2D = 4,
    DEQUANTIZE = 6,
    FULLY_CONNECTED = 9,
    LOGISTIC = 14,
    MAX_POOL_2D = 17,
    MUL = 18,
    RELU = 19,
    RELU6 = 21,
    RESHAPE = 22,
    SOFTMAX = 25,
    PAD = 34,
    MEAN = 40,
    LEAKY_RELU = 98,
    QUANTIZE = 114,
    HARD_SWISH = 117,
}

/// The schema name of a builtin operator code.
pub fn operator_name(code: i32) -> Option<&'static str> {
    OPERATORS.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// `BuiltinOptions` union tags.
pub mod options {
    pub const CONV_2D: u8 = 1;
    pub const DEPTHWISE_CONV_2D: u8 = 2;
    pub const POOL_2D: u8 = 5;
    pub const FULLY_CONNECTED: u8 = 8;
    pub const SOFTMAX: u8 = 9;
    pub const CONCATENATION: u8 = 10;
    pub const ADD: u8 = 11;
    pub const RESHAPE: u8 = 17;
    pub const PAD: u8 = 22;
    pub const LEAKY_RELU: u8 = 75;
    pub const QUANTIZE: u8 = 89;
    pub const HARD_SWISH: u8 = 91;
}
