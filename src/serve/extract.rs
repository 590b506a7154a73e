//! The API's one error type and the extractors that turn every refusal of a request into it: axum's `Query`,
//! `Json` and `Path` wrapped so that their rejections (a bad query string, JSON that is not JSON or not the
//! endpoint's shape, a path segment that is not UTF-8) are answered as `{"error": "...", "status": N}` like
//! every other error, and an unknown parameter is named with the ones the endpoint takes.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

/// The body of every error the API answers with.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in words for the client.
    pub error: String,
    /// The HTTP status, repeated (a batch's per-query errors carry theirs here only).
    pub status: u16,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.message.clone(),
            status: self.status.as_u16(),
        }
    }

    /// A value that serde refused: an unknown field is named with those `what` takes, in the words a query
    /// string's parameters are refused with.
    pub fn from_serde(message: &str, status: StatusCode, what: Fields) -> Self {
        match unknown_field(message) {
            Some((field, takes)) => Self::bad(match what {
                Fields::Query => {
                    format!("unknown parameter {field:?} (this endpoint takes: {takes})")
                }
                Fields::Body => format!("unknown field {field:?} in the body (it takes: {takes})"),
                Fields::BatchEntry => {
                    format!("unknown field {field:?} in a query (it takes: {takes})")
                }
            }),
            None => Self::new(status, message),
        }
    }
}

/// Where refused fields came from, for the words of [`ApiError::from_serde`].
#[derive(Debug, Clone, Copy)]
pub enum Fields {
    Query,
    Body,
    BatchEntry,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// The field serde's `deny_unknown_fields` refused and the ones it expected, from its message ("unknown
/// field `x`, expected one of `a`, `b`", or "expected `a`", or "there are no fields"; serde_json adds
/// " at line L column C").
fn unknown_field(message: &str) -> Option<(String, String)> {
    const MARK: &str = "unknown field `";
    let rest = &message[message.find(MARK)? + MARK.len()..];
    let (field, rest) = rest.split_once('`')?;
    let expected = rest.split(" at line ").next().unwrap_or("");
    let takes = match expected.split_once("expected") {
        Some((_, names)) => names.trim_start_matches(" one of").replace('`', ""),
        None => "nothing".into(),
    };
    Some((field.to_string(), takes.trim().to_string()))
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::from_serde(&r.body_text(), r.status(), Fields::Query)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // axum answers a body of the wrong shape with 422; this API has always said 400 for any body it
        // cannot take, and clients branch on that.
        let status = match r.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        };
        Self::from_serde(&r.body_text(), status, Fields::Body)
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(r.status(), r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        Self::new(r.status(), r.body_text())
    }
}

/// A query string deserialised into `T`; refused as an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        check_utf8(parts.uri.query().unwrap_or(""))?;
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Refuses a query string whose names or values are not UTF-8 once percent-decoded: the form decoder would
/// replace those bytes, and a search for the replacement characters is not what was asked.
fn check_utf8(query: &str) -> ApiResult<()> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode_component(name, "a parameter name")?;
        decode_component(value, &format!("parameter {name}"))?;
    }
    Ok(())
}

fn decode_component(s: &str, what: &str) -> ApiResult<String> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::bad(format!("{what} is not valid UTF-8 once percent-decoded")))
}

/// A JSON body deserialised into `T`; refused as an [`ApiError`]. A body is read as JSON whatever its
/// `Content-Type` says (or without one), as the API always took it: `curl --data` labels JSON as a form.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let bytes = Bytes::from_request(req, state).await?;
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

/// Path parameters deserialised into `T`; refused as an [`ApiError`].
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_unknown_fields_are_said_with_what_the_endpoint_takes() {
        let e = ApiError::from_serde(
            "Failed to deserialize query string: unknown field `lable`, expected one of `q`, `k`",
            StatusCode::BAD_REQUEST,
            Fields::Query,
        );
        assert_eq!(
            e.message,
            "unknown parameter \"lable\" (this endpoint takes: q, k)"
        );
        let e = ApiError::from_serde(
            "unknown field `kk`, expected `queries` at line 1 column 9",
            StatusCode::UNPROCESSABLE_ENTITY,
            Fields::Body,
        );
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "unknown field \"kk\" in the body (it takes: queries)"
        );
        let e = ApiError::from_serde("invalid type", StatusCode::PAYLOAD_TOO_LARGE, Fields::Body);
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "invalid type")
        );
    }
}
