//! Field-level validation errors shared by every request type.

use std::fmt;

/// A request field that failed validation: which one, and what a person should fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A required, bounded, non-blank string.
pub fn text(field: &str, value: &str, max_len: usize) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > max_len {
        return Err(FieldError::new(
            field,
            format!("must be at most {max_len} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A money or rate figure: finite and not negative.
pub fn non_negative(field: &str, value: f64) -> Result<(), FieldError> {
    if !value.is_finite() || value < 0.0 {
        return Err(FieldError::new(field, "must be a finite number >= 0"));
    }
    Ok(())
}
