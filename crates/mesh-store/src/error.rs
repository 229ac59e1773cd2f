use thiserror::Error;

/// What can go wrong in a store, in terms a service can map to a response.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// The change conflicts with current state (duplicate name, terminal task, …).
    #[error("{0}")]
    Conflict(String),
    /// The request named something malformed, e.g. a pagination cursor.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The store URL is malformed or names an unknown backend.
    #[error("invalid store URL: {0}")]
    BadUrl(String),
    /// The backend cannot be reached or refused the connection.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back into its type.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match &err {
            rusqlite::Error::SqliteFailure(code, _)
                if matches!(
                    code.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::CannotOpen
                ) =>
            {
                StoreError::Unavailable(err.to_string())
            }
            _ => StoreError::Backend(err.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        let io = std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>());
        if err.is_closed() || io || err.to_string().contains("timeout") {
            return StoreError::Unavailable(error_chain(&err));
        }
        StoreError::Backend(error_chain(&err))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(error_chain(&err))
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        StoreError::Corrupt(err.to_string())
    }
}

/// An error and its sources on one line: driver errors hide the useful part in `source()`.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
