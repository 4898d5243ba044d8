//! The library's error type: every variant names what was wrong and where.

use std::path::PathBuf;

/// Errors raised by densum. Bad input never panics; it becomes one of these.
#[derive(Debug, thiserror::Error)]
pub enum DensumError {
    /// A model name that is not in the registry.
    #[error("unknown model `{name}`{}", did_you_mean(.suggestions))]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The closest registered names.
        suggestions: Vec<String>,
    },
    /// An option that is invalid or does not apply to the model.
    #[error("invalid option for `{model}`: {message}")]
    InvalidOption {
        /// The model being built.
        model: String,
        /// What is wrong, naming the option.
        message: String,
    },
    /// A weight file that does not match the model.
    #[error("weights {}: {message}", .path.display())]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        message: String,
    },
    /// An image that cannot be read or decoded.
    #[error("image {}: {message}", .path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// Why it could not be used.
        message: String,
    },
    /// A training or evaluation configuration that cannot run.
    #[error("{0}")]
    Config(String),
    /// A dataset that cannot be read.
    #[error("data: {0}")]
    Data(String),
    /// Training stopped (for example on a non-finite loss); checkpoints already written are kept.
    #[error("training stopped: {0}")]
    Stopped(String),
    /// A network that cannot be exported (ONNX: an operation or shape the exporter refuses).
    #[error("export: {0}")]
    Export(String),
    /// A file-system error, with the file it concerns.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean: {}?", suggestions.join(", "))
    }
}

/// Result alias for densum.
pub type Result<T> = std::result::Result<T, DensumError>;

impl DensumError {
    /// An [`DensumError::InvalidOption`] for `model`.
    pub fn option(model: &str, message: impl Into<String>) -> Self {
        DensumError::InvalidOption {
            model: model.to_string(),
            message: message.into(),
        }
    }

    /// A [`DensumError::Weights`] for the file at `path`.
    pub fn weights(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DensumError::Weights {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An [`DensumError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DensumError::Io {
            path: path.into(),
            source,
        }
    }
}
