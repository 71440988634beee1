//! DICOMweb client: the only part of cohort that talks to a PACS over HTTP.
//!
//! This module owns:
//! - [`Client`]: a blocking HTTP(S) client (ureq) with connect/read timeouts and optional basic
//!   auth, for QIDO-RS searches ([`Client::search_studies`], [`Client::search_series`]) and WADO-RS
//!   retrieval of whole studies or single series ([`Client::retrieve_study`],
//!   [`Client::retrieve_series`]);
//! - parsing of DICOM JSON QIDO responses (PS3.18 F.2) into [`StudyHit`] / [`SeriesHit`];
//! - a streaming `multipart/related` parser (RFC 2046) that returns each part's bytes (one DICOM
//!   Part-10 file per part) untouched;
//! - parsing of user query strings ([`parse_query`]) and turning loose `StudyDate` values such as
//!   `2019-2020` into DICOM date ranges;
//! - the single error type [`DicomWebError`], which names the URL, study UID, HTTP status and what
//!   was wrong.
//!
//! It does not decode DICOM files, write anything to disk, print, or read the environment (no proxy
//! from env). Bad server responses become errors, never panics. Limits: a response body over
//! [`MAX_BODY_BYTES`] or a multipart response with more than [`MAX_PARTS`] parts is refused.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest response body accepted (4 GiB).
pub const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Largest number of parts accepted in one multipart/related response.
pub const MAX_PARTS: usize = 1_000_000;

const QIDO_PAGE_LIMIT: usize = 100;
const MAX_QIDO_RESULTS: usize = 1_000_000;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
const ERROR_SNIPPET_CHARS: usize = 200;
const ERROR_BODY_READ_BYTES: u64 = 16 * 1024;
const READ_CHUNK: usize = 256 * 1024;
const MAX_PART_HEADER_BYTES: usize = 64 * 1024;
const MAX_BOUNDARY_LEN: usize = 256;

const ACCEPT_DICOM_ANY_TS: &str =
    "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
const ACCEPT_DICOM: &str = "multipart/related; type=\"application/dicom\"";
const ACCEPT_DICOM_JSON: &str = "application/dicom+json";
const ACCEPT_JSON: &str = "application/json";

const TAG_STUDY_UID: &str = "0020000D";
const TAG_PATIENT_ID: &str = "00100020";
const TAG_STUDY_DATE: &str = "00080020";
const TAG_MODALITIES_IN_STUDY: &str = "00080061";
const TAG_STUDY_INSTANCES: &str = "00201208";
const TAG_SERIES_UID: &str = "0020000E";
const TAG_MODALITY: &str = "00080060";
const TAG_SERIES_INSTANCES: &str = "00201209";

/// Everything that can go wrong talking DICOMweb. Each variant carries the context it has: the
/// URL requested, the study (and series) UID, the HTTP status and what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DicomWebError {
    /// The base URL given to [`Client::new`] is unusable.
    #[error("invalid DICOMweb base URL {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    /// A query key or value is not acceptable.
    #[error("invalid query parameter {key:?}: {reason}")]
    InvalidQuery { key: String, reason: String },
    /// A study or series UID is not safe to put in a URL path.
    #[error("invalid UID {uid:?}: {reason}")]
    InvalidUid { uid: String, reason: String },
    /// A CA or client certificate or key file that cannot be used.
    #[error("{path}: {reason}")]
    Tls { path: std::path::PathBuf, reason: String },
    /// The server could not be reached (DNS, refused connection, timeout, TLS, ...).
    #[error("cannot reach {url}: {message}")]
    Connection { url: String, message: String },
    /// The server answered with an unexpected HTTP status.
    #[error("{url}{} answered HTTP {status}: {body}", for_study(.study_uid))]
    Http {
        url: String,
        status: u16,
        study_uid: Option<String>,
        /// The first 200 characters of the response body.
        body: String,
    },
    /// The study (or series) does not exist on the server, or the server returned no instance.
    #[error("{} not found at {url}: {reason}", what_uid(.study_uid, .series_uid))]
    NotFound {
        url: String,
        study_uid: String,
        series_uid: Option<String>,
        reason: String,
    },
    /// Reading the response body failed part way (connection reset, read timeout, ...).
    #[error("reading the response from {url}{} failed: {source}", for_study(.study_uid))]
    Read {
        url: String,
        study_uid: Option<String>,
        source: std::io::Error,
    },
    /// The response body is larger than [`MAX_BODY_BYTES`].
    #[error("response from {url}{} is larger than the limit of {limit} bytes", for_study(.study_uid))]
    BodyTooLarge {
        url: String,
        study_uid: Option<String>,
        limit: u64,
    },
    /// The multipart response has more than [`MAX_PARTS`] parts.
    #[error("multipart response{} has more than {limit} parts", context(.url, .study_uid))]
    TooManyParts {
        url: Option<String>,
        study_uid: Option<String>,
        limit: usize,
    },
    /// The response's Content-Type is not what was asked for, or lacks a boundary.
    #[error("unexpected Content-Type {content_type:?} from {url}{}: {reason}", for_study(.study_uid))]
    ContentType {
        url: String,
        study_uid: Option<String>,
        content_type: String,
        reason: String,
    },
    /// The multipart/related body does not follow RFC 2046.
    #[error("malformed multipart/related body{}: {reason}", context(.url, .study_uid))]
    Multipart {
        url: Option<String>,
        study_uid: Option<String>,
        reason: String,
    },
    /// The multipart/related body ended before its closing boundary.
    #[error(
        "truncated multipart/related body{}: no closing boundary after {complete_parts} complete part(s)",
        context(.url, .study_uid)
    )]
    Truncated {
        url: Option<String>,
        study_uid: Option<String>,
        complete_parts: usize,
    },
    /// The QIDO-RS response is not a DICOM JSON array of the expected shape.
    #[error("malformed QIDO-RS response{}: {reason}", context(.url, .study_uid))]
    Qido {
        url: Option<String>,
        study_uid: Option<String>,
        reason: String,
    },
    /// A search returned more results than cohort is willing to hold.
    #[error("QIDO-RS search {url} returned more than {limit} results")]
    TooManyResults { url: String, limit: usize },
}

fn for_study(study_uid: &Option<String>) -> String {
    match study_uid {
        Some(s) => format!(" (study {s})"),
        None => String::new(),
    }
}

fn context(url: &Option<String>, study_uid: &Option<String>) -> String {
    match (url, study_uid) {
        (Some(u), Some(s)) => format!(" from {u} (study {s})"),
        (Some(u), None) => format!(" from {u}"),
        (None, Some(s)) => format!(" (study {s})"),
        (None, None) => String::new(),
    }
}

fn what_uid(study_uid: &str, series_uid: &Option<String>) -> String {
    match series_uid {
        Some(se) => format!("series {se} of study {study_uid}"),
        None => format!("study {study_uid}"),
    }
}

impl DicomWebError {
    /// Fill in the URL and study UID of errors raised by the context-free parsers.
    fn in_context(mut self, at_url: &str, study: Option<&str>) -> Self {
        match &mut self {
            DicomWebError::TooManyParts { url, study_uid, .. }
            | DicomWebError::Multipart { url, study_uid, .. }
            | DicomWebError::Truncated { url, study_uid, .. }
            | DicomWebError::Qido { url, study_uid, .. } => {
                if url.is_none() {
                    *url = Some(at_url.to_owned());
                }
                if study_uid.is_none() {
                    *study_uid = study.map(str::to_owned);
                }
            }
            _ => {}
        }
        self
    }
}

/// One study found by QIDO-RS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyHit {
    pub study_uid: String,
    pub patient_id: Option<String>,
    pub study_date: Option<String>,
    pub modalities: Vec<String>,
    pub number_of_instances: Option<u64>,
}

/// One series of a study found by QIDO-RS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesHit {
    pub series_uid: String,
    pub modality: Option<String>,
    pub number_of_instances: Option<u64>,
}

/// A DICOMweb client bound to one service base URL, e.g. `http://127.0.0.1:18042/dicom-web`.
#[derive(Clone)]
pub struct Client {
    base_url: String,
    connect_timeout: Duration,
    read_timeout: Duration,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    agent: ureq::Agent,
    auth_user: Option<String>,
    auth_header: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("basic_auth_user", &self.auth_user)
            .finish_non_exhaustive()
    }
}

/// What a GET came back with: a 1xx-3xx response, or an error status with its response.
enum Answer {
    Success(ureq::Response),
    Status(u16, ureq::Response),
}

impl Client {
    /// A client for the DICOMweb service at `base_url` (http or https). Trailing `/` are removed.
    /// Timeouts: 10 s to connect, 60 s per read/write.
    pub fn new(base_url: &str) -> Result<Client, DicomWebError> {
        let base_url = validate_base_url(base_url)?;
        Ok(Client {
            base_url,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            tls: None,
            agent: build_agent(DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, None),
            auth_user: None,
            auth_header: None,
        })
    }

    /// Send HTTP basic auth with every request (never sent again after a redirect).
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Client {
        let token = base64_encode(format!("{user}:{password}").as_bytes());
        self.auth_user = Some(user.to_owned());
        self.auth_header = Some(format!("Basic {token}"));
        self
    }

    /// Replace the connect timeout and the per-read (and per-write) timeout.
    pub fn with_timeouts(mut self, connect: Duration, read: Duration) -> Client {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self.agent = build_agent(connect, read, self.tls.clone());
        self
    }

    /// TLS for a server whose certificate a private CA signed (`ca`: PEM certificates, trusted
    /// besides the public roots), and a client certificate for servers that ask for one
    /// (`client`: PEM certificate chain and PEM private key).
    pub fn with_tls(mut self, tls: &TlsFiles) -> Result<Client, DicomWebError> {
        let config = tls_config(tls)?;
        self.tls = Some(config);
        self.agent = build_agent(self.connect_timeout, self.read_timeout, self.tls.clone());
        Ok(self)
    }

    /// The base URL, without trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// QIDO-RS study search: `GET {base}/studies?{query}&includefield=...&limit=100&offset=N`.
    ///
    /// Keys must be DICOM keywords or 8-hex-digit tags (see [`parse_query`]); values are
    /// percent-encoded. Date keys (`StudyDate`, ...) accept `YYYY`, `YYYYMM`, `YYYYMMDD` or a
    /// range `A-B` of those (either end may be open): `2019-2020` becomes `20190101-20201231`.
    /// Pages are followed while the server returns exactly `limit` results.
    pub fn search_studies(
        &self,
        query: &[(String, String)],
    ) -> Result<Vec<StudyHit>, DicomWebError> {
        let mut params = Vec::with_capacity(query.len());
        for (key, value) in query {
            let key = normalize_key(key)?;
            let value = if is_date_key(&key) {
                normalize_date_value(&key, value)?
            } else {
                value.clone()
            };
            params.push((key, value));
        }
        let url = format!("{}/studies", self.base_url);
        let includes = [
            TAG_STUDY_UID,
            TAG_PATIENT_ID,
            TAG_STUDY_DATE,
            TAG_MODALITIES_IN_STUDY,
            TAG_STUDY_INSTANCES,
        ];
        self.qido_paged(&url, &params, &includes, None, parse_qido_studies, |h| {
            h.study_uid.as_str()
        })
    }

    /// QIDO-RS series of one study: `GET {base}/studies/{uid}/series` (paged like
    /// [`Client::search_studies`]). A 404 becomes [`DicomWebError::NotFound`].
    pub fn search_series(&self, study_uid: &str) -> Result<Vec<SeriesHit>, DicomWebError> {
        let study = validate_uid(study_uid)?;
        let url = format!("{}/studies/{study}/series", self.base_url);
        let includes = [TAG_SERIES_UID, TAG_MODALITY, TAG_SERIES_INSTANCES];
        self.qido_paged(&url, &[], &includes, Some(study), parse_qido_series, |h| {
            h.series_uid.as_str()
        })
    }

    /// WADO-RS: `GET {base}/studies/{uid}`, returning each part's bytes (one DICOM Part-10 file per
    /// part) exactly as the server sent them. Asks for any transfer syntax first and falls back to
    /// plain `multipart/related; type="application/dicom"` on 400/406. The body is parsed while
    /// it streams in. 404, 204 or a response without parts become [`DicomWebError::NotFound`].
    pub fn retrieve_study(&self, study_uid: &str) -> Result<Vec<Vec<u8>>, DicomWebError> {
        let study = validate_uid(study_uid)?;
        let url = format!("{}/studies/{study}", self.base_url);
        self.retrieve(&url, study, None)
    }

    /// WADO-RS for one series: `GET {base}/studies/{study}/series/{series}`; otherwise as
    /// [`Client::retrieve_study`].
    pub fn retrieve_series(
        &self,
        study_uid: &str,
        series_uid: &str,
    ) -> Result<Vec<Vec<u8>>, DicomWebError> {
        let study = validate_uid(study_uid)?;
        let series = validate_uid(series_uid)?;
        let url = format!("{}/studies/{study}/series/{series}", self.base_url);
        self.retrieve(&url, study, Some(series))
    }

    fn get(&self, url: &str, accept: &str) -> Result<Answer, DicomWebError> {
        let mut request = self.agent.get(url).set("Accept", accept);
        if let Some(auth) = &self.auth_header {
            request = request.set("Authorization", auth);
        }
        match request.call() {
            Ok(response) => Ok(Answer::Success(response)),
            Err(ureq::Error::Status(status, response)) => Ok(Answer::Status(status, response)),
            Err(ureq::Error::Transport(transport)) => Err(DicomWebError::Connection {
                url: url.to_owned(),
                message: transport_message(&transport),
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn qido_paged<T>(
        &self,
        path_url: &str,
        params: &[(String, String)],
        includes: &[&str],
        study: Option<&str>,
        parse: fn(&[u8]) -> Result<Vec<T>, DicomWebError>,
        uid_of: fn(&T) -> &str,
    ) -> Result<Vec<T>, DicomWebError> {
        let mut hits: Vec<T> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut offset = 0usize;
        loop {
            let url = qido_url(path_url, params, includes, QIDO_PAGE_LIMIT, offset);
            let mut answer = self.get(&url, ACCEPT_DICOM_JSON)?;
            if matches!(answer, Answer::Status(406, _)) {
                answer = self.get(&url, ACCEPT_JSON)?;
            }
            let response = match answer {
                Answer::Success(response) => response,
                Answer::Status(404, response) if study.is_some() => {
                    let study_uid = study.unwrap_or_default().to_owned();
                    return Err(DicomWebError::NotFound {
                        reason: format!("HTTP 404: {}", error_snippet(response)),
                        url,
                        study_uid,
                        series_uid: None,
                    });
                }
                Answer::Status(status, response) => {
                    return Err(DicomWebError::Http {
                        body: error_snippet(response),
                        url,
                        status,
                        study_uid: study.map(str::to_owned),
                    })
                }
            };
            let body = if response.status() == 204 {
                Vec::new()
            } else {
                read_body(response, &url, study)?
            };
            let page = parse(&body).map_err(|e| e.in_context(&url, study))?;
            let page_len = page.len();
            let mut new_hits = 0usize;
            for hit in page {
                if seen.insert(uid_of(&hit).to_owned()) {
                    hits.push(hit);
                    new_hits += 1;
                }
            }
            if hits.len() > MAX_QIDO_RESULTS {
                return Err(DicomWebError::TooManyResults {
                    url: path_url.to_owned(),
                    limit: MAX_QIDO_RESULTS,
                });
            }
            // Stop on a short page, or when the server ignores `offset` and repeats itself.
            if page_len != QIDO_PAGE_LIMIT || new_hits == 0 {
                return Ok(hits);
            }
            offset += page_len;
        }
    }

    fn retrieve(
        &self,
        url: &str,
        study: &str,
        series: Option<&str>,
    ) -> Result<Vec<Vec<u8>>, DicomWebError> {
        let not_found = |reason: String| DicomWebError::NotFound {
            url: url.to_owned(),
            study_uid: study.to_owned(),
            series_uid: series.map(str::to_owned),
            reason,
        };
        let mut answer = self.get(url, ACCEPT_DICOM_ANY_TS)?;
        if matches!(answer, Answer::Status(400 | 406, _)) {
            answer = self.get(url, ACCEPT_DICOM)?;
        }
        let response = match answer {
            Answer::Success(response) => response,
            Answer::Status(404 | 410, response) => {
                let status = response.status();
                return Err(not_found(format!(
                    "HTTP {status}: {}",
                    error_snippet(response)
                )));
            }
            Answer::Status(status, response) => {
                return Err(DicomWebError::Http {
                    url: url.to_owned(),
                    status,
                    study_uid: Some(study.to_owned()),
                    body: error_snippet(response),
                })
            }
        };
        match response.status() {
            200 => {}
            204 => return Err(not_found("HTTP 204 No Content".to_owned())),
            status => {
                // 206 (some instances left out) and anything else: never accept a partial study.
                return Err(DicomWebError::Http {
                    url: url.to_owned(),
                    status,
                    study_uid: Some(study.to_owned()),
                    body: error_snippet(response),
                });
            }
        }
        let content_type = response.header("Content-Type").unwrap_or("").to_owned();
        let boundary =
            multipart_boundary(&content_type).map_err(|reason| DicomWebError::ContentType {
                url: url.to_owned(),
                study_uid: Some(study.to_owned()),
                content_type: content_type.clone(),
                reason,
            })?;
        check_content_length(&response, url, Some(study))?;
        let mut parser = MultipartParser::new(&boundary, MAX_PARTS)
            .map_err(|e| e.in_context(url, Some(study)))?;
        let mut reader = response.into_reader();
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut total: u64 = 0;
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(DicomWebError::Read {
                        url: url.to_owned(),
                        study_uid: Some(study.to_owned()),
                        source,
                    })
                }
            };
            total += n as u64;
            if total > MAX_BODY_BYTES {
                return Err(DicomWebError::BodyTooLarge {
                    url: url.to_owned(),
                    study_uid: Some(study.to_owned()),
                    limit: MAX_BODY_BYTES,
                });
            }
            parser
                .feed(&chunk[..n])
                .map_err(|e| e.in_context(url, Some(study)))?;
        }
        let parts = parser
            .finish()
            .map_err(|e| e.in_context(url, Some(study)))?;
        if parts.is_empty() {
            return Err(not_found(
                "the multipart response holds no instance".to_owned(),
            ));
        }
        Ok(parts)
    }
}

fn build_agent(connect: Duration, read: Duration, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> ureq::Agent {
    let b = ureq::AgentBuilder::new()
        .timeout_connect(connect)
        .timeout_read(read)
        .timeout_write(read)
        .try_proxy_from_env(false)
        .user_agent("cohort-dicomweb");
    match tls {
        Some(t) => b.tls_config(t).build(),
        None => b.build(),
    }
}

/// Certificate files for [`Client::with_tls`].
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// PEM CA certificate(s) to trust besides the public roots.
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate chain and PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

fn tls_config(files: &TlsFiles) -> Result<std::sync::Arc<rustls::ClientConfig>, DicomWebError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &std::path::Path, reason: String| DicomWebError::Tls { path: path.to_path_buf(), reason };
    let certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, DicomWebError> {
        let certs = CertificateDer::pem_file_iter(path).and_then(|i| i.collect::<Result<Vec<_>, _>>()).map_err(|e| bad(path, format!("cannot read PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(bad(path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &files.ca {
        for c in certs(ca)? {
            roots.add(c).map_err(|e| bad(ca, format!("not a usable CA certificate: {e}")))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DicomWebError::Tls { path: Default::default(), reason: e.to_string() })?
        .with_root_certificates(roots);
    let config = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certs(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, format!("cannot read a PEM private key: {e}")))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| bad(cert, format!("does not go with its key: {e}")))?
        }
    };
    Ok(std::sync::Arc::new(config))
}

fn transport_message(transport: &ureq::Transport) -> String {
    let mut message = transport.kind().to_string();
    if let Some(detail) = transport.message() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(source) = std::error::Error::source(transport) {
        message.push_str(": ");
        message.push_str(&source.to_string());
    }
    message
}

/// The first [`ERROR_SNIPPET_CHARS`] characters of an error response body, on one line.
fn error_snippet(response: ureq::Response) -> String {
    let mut bytes = Vec::new();
    // A failure to read an error body only shortens the message.
    let _ = response
        .into_reader()
        .take(ERROR_BODY_READ_BYTES)
        .read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let snippet: String = text
        .trim()
        .chars()
        .take(ERROR_SNIPPET_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if snippet.is_empty() {
        "(empty body)".to_owned()
    } else {
        snippet
    }
}

fn check_content_length(
    response: &ureq::Response,
    url: &str,
    study: Option<&str>,
) -> Result<(), DicomWebError> {
    let declared = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > MAX_BODY_BYTES => Err(DicomWebError::BodyTooLarge {
            url: url.to_owned(),
            study_uid: study.map(str::to_owned),
            limit: MAX_BODY_BYTES,
        }),
        _ => Ok(()),
    }
}

fn read_body(
    response: ureq::Response,
    url: &str,
    study: Option<&str>,
) -> Result<Vec<u8>, DicomWebError> {
    check_content_length(&response, url, study)?;
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_BODY_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|source| DicomWebError::Read {
            url: url.to_owned(),
            study_uid: study.map(str::to_owned),
            source,
        })?;
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(DicomWebError::BodyTooLarge {
            url: url.to_owned(),
            study_uid: study.map(str::to_owned),
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(body)
}

fn qido_url(
    path_url: &str,
    params: &[(String, String)],
    includes: &[&str],
    limit: usize,
    offset: usize,
) -> String {
    let mut url = String::with_capacity(path_url.len() + 64 + params.len() * 32);
    url.push_str(path_url);
    url.push('?');
    for (key, value) in params {
        percent_encode_into(key, &mut url);
        url.push('=');
        percent_encode_into(value, &mut url);
        url.push('&');
    }
    for tag in includes {
        url.push_str("includefield=");
        url.push_str(tag);
        url.push('&');
    }
    url.push_str(&format!("limit={limit}&offset={offset}"));
    url
}

fn validate_base_url(input: &str) -> Result<String, DicomWebError> {
    let invalid = |reason: &str| DicomWebError::InvalidBaseUrl {
        url: input.to_owned(),
        reason: reason.to_owned(),
    };
    let url = input.trim();
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("contains whitespace or control characters"));
    }
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &url["http://".len()..]
    } else if lower.starts_with("https://") {
        &url["https://".len()..]
    } else {
        return Err(invalid("the scheme must be http:// or https://"));
    };
    if url.contains('?') || url.contains('#') {
        return Err(invalid("must not contain a query (?) or fragment (#)"));
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err(invalid(
            "credentials in the URL are not accepted; use Client::with_basic_auth",
        ));
    }
    let (host, port) = if let Some(after_bracket) = authority.strip_prefix('[') {
        match after_bracket.split_once(']') {
            Some((host, tail)) => {
                if host.is_empty() {
                    return Err(invalid("empty IPv6 host"));
                }
                match tail {
                    "" => (host, None),
                    _ => match tail.strip_prefix(':') {
                        Some(port) => (host, Some(port)),
                        None => return Err(invalid("garbage after the IPv6 host")),
                    },
                }
            }
            None => return Err(invalid("unclosed '[' in the host")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    if let Some(port) = port {
        if port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err()
        {
            return Err(invalid("the port must be a number from 0 to 65535"));
        }
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// UIDs go into URL paths: allow only characters that need no escaping and cannot change the
/// path (strict DICOM UIDs are digits and dots; letters, `-` and `_` are tolerated).
fn validate_uid(uid: &str) -> Result<&str, DicomWebError> {
    let invalid = |reason: &str| DicomWebError::InvalidUid {
        uid: uid.to_owned(),
        reason: reason.to_owned(),
    };
    if uid.is_empty() {
        return Err(invalid("empty"));
    }
    if uid.len() > 128 {
        return Err(invalid("longer than 128 characters"));
    }
    if !uid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        return Err(invalid(
            "only digits, letters, '.', '-' and '_' are allowed",
        ));
    }
    if uid.bytes().all(|b| b == b'.') {
        return Err(invalid("not a UID"));
    }
    Ok(uid)
}

// ---------------------------------------------------------------------------------------------
// Query strings and dates

/// Parse `PatientID=FAKE0001&StudyDate=2019-2020&ModalitiesInStudy=CT` into (key, value) pairs.
///
/// Keys and values are percent-decoded (`+` stays a literal plus). A key must be a DICOM keyword
/// (`PatientID`: an upper-case letter then letters and digits; not checked against the
/// dictionary), an 8-hex-digit tag (`00100020`, returned upper-case), or a `.`-separated path of
/// those into sequences. Empty segments and a leading `?` are skipped; a segment without `=` is
/// an error. Values are returned as given (date ranges are expanded by
/// [`Client::search_studies`]).
pub fn parse_query(q: &str) -> Result<Vec<(String, String)>, DicomWebError> {
    let q = q.trim();
    let q = q.strip_prefix('?').unwrap_or(q);
    let mut pairs = Vec::new();
    for segment in q.split('&') {
        if segment.is_empty() {
            continue;
        }
        let Some((raw_key, raw_value)) = segment.split_once('=') else {
            return Err(DicomWebError::InvalidQuery {
                key: segment.to_owned(),
                reason: "expected key=value".to_owned(),
            });
        };
        let key = percent_decode(raw_key).map_err(|reason| DicomWebError::InvalidQuery {
            key: raw_key.to_owned(),
            reason,
        })?;
        let value = percent_decode(raw_value).map_err(|reason| DicomWebError::InvalidQuery {
            key: key.clone(),
            reason: format!("value {raw_value:?}: {reason}"),
        })?;
        pairs.push((normalize_key(&key)?, value));
    }
    Ok(pairs)
}

fn normalize_key(key: &str) -> Result<String, DicomWebError> {
    let invalid = |reason: &str| DicomWebError::InvalidQuery {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    if key.is_empty() {
        return Err(invalid("empty key"));
    }
    let mut out = String::with_capacity(key.len());
    for (i, component) in key.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if component.len() == 8 && component.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push_str(&component.to_ascii_uppercase());
        } else if is_keyword(component) {
            out.push_str(component);
        } else {
            return Err(invalid(
                "not a DICOM keyword (e.g. PatientID) or 8-hex-digit tag (e.g. 00100020)",
            ));
        }
    }
    Ok(out)
}

fn is_keyword(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_uppercase()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric())
}

fn is_date_key(key: &str) -> bool {
    const DATE_TAGS: [&str; 6] = [
        "00080012", // InstanceCreationDate
        "00080020", // StudyDate
        "00080021", // SeriesDate
        "00080022", // AcquisitionDate
        "00080023", // ContentDate
        "00100030", // PatientBirthDate
    ];
    DATE_TAGS.contains(&key) || (is_keyword(key) && key.ends_with("Date"))
}

/// `YYYY`, `YYYYMM`, `YYYYMMDD` or `A-B` of those (either side may be empty) → DICOM DA match.
fn normalize_date_value(key: &str, value: &str) -> Result<String, DicomWebError> {
    let invalid = |reason: String| DicomWebError::InvalidQuery {
        key: key.to_owned(),
        reason: format!("date {value:?}: {reason}"),
    };
    let v = value.trim();
    if v.is_empty() {
        return Ok(String::new());
    }
    match v.split_once('-') {
        None => {
            let (start, end) = date_bounds(v).map_err(invalid)?;
            Ok(if start == end {
                start
            } else {
                format!("{start}-{end}")
            })
        }
        Some((a, b)) => {
            if b.contains('-') {
                return Err(invalid(
                    "expected YYYY, YYYYMM, YYYYMMDD or a range A-B of those".to_owned(),
                ));
            }
            let (a, b) = (a.trim(), b.trim());
            if a.is_empty() && b.is_empty() {
                return Err(invalid("a range needs at least one end".to_owned()));
            }
            let start = if a.is_empty() {
                String::new()
            } else {
                date_bounds(a).map_err(invalid)?.0
            };
            let end = if b.is_empty() {
                String::new()
            } else {
                date_bounds(b).map_err(invalid)?.1
            };
            if !start.is_empty() && !end.is_empty() && start > end {
                return Err(invalid("the range ends before it starts".to_owned()));
            }
            Ok(format!("{start}-{end}"))
        }
    }
}

/// First and last day (YYYYMMDD) covered by `YYYY`, `YYYYMM` or `YYYYMMDD`.
fn date_bounds(s: &str) -> Result<(String, String), String> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not YYYY, YYYYMM or YYYYMMDD"));
    }
    let year: u32 = s.get(0..4).and_then(|y| y.parse().ok()).unwrap_or(0);
    let month = |m: &str| -> Result<u32, String> {
        match m.parse::<u32>() {
            Ok(m) if (1..=12).contains(&m) => Ok(m),
            _ => Err(format!("bad month in {s:?}")),
        }
    };
    match s.len() {
        4 => Ok((format!("{s}0101"), format!("{s}1231"))),
        6 => {
            let m = month(&s[4..6])?;
            Ok((
                format!("{s}01"),
                format!("{s}{:02}", days_in_month(year, m)),
            ))
        }
        8 => {
            let m = month(&s[4..6])?;
            let d: u32 = s[6..8].parse().unwrap_or(0);
            if d == 0 || d > days_in_month(year, m) {
                return Err(format!("bad day in {s:?}"));
            }
            Ok((s.to_owned(), s.to_owned()))
        }
        _ => Err(format!("{s:?} is not YYYY, YYYYMM or YYYYMMDD")),
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Percent-encode a query key or value. Unreserved characters stay, and so do the DICOM matching
/// characters `*` `?` `^` `,` `:`: servers that do not percent-decode QIDO values (Orthanc 1.10 with
/// DICOMweb 1.7 matches `PatientName=Fake%5EA*` against the literal `%5E`) still match them, and
/// servers that decode see the same value. Everything else (space, `&`, `=`, `+`, `%`, `#`, `\`,
/// non-ASCII, ...) is encoded.
fn percent_encode_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'_' | b'~' | b'*' | b'?' | b'^' | b',' | b':'
            )
        {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err(format!("bad percent escape at byte {i}")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-decodes to invalid UTF-8".to_owned())
}

fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// QIDO-RS DICOM JSON

/// Parse a DICOM JSON (PS3.18 F.2) QIDO-RS study response: an array of objects keyed by
/// 8-hex-digit tags, each `{"vr": .., "Value": [..]}`. An empty body is an empty result. Missing
/// or malformed optional values become `None` / empty; a result without StudyInstanceUID is an
/// error.
pub fn parse_qido_studies(json: &[u8]) -> Result<Vec<StudyHit>, DicomWebError> {
    let objects = qido_objects(json)?;
    let mut hits = Vec::with_capacity(objects.len());
    for (i, obj) in objects.iter().enumerate() {
        let study_uid = first_string(obj, TAG_STUDY_UID)
            .ok_or_else(|| qido_error(format!("result {i} has no StudyInstanceUID (0020000D)")))?;
        let mut modalities: Vec<String> = Vec::new();
        for value in values(obj, TAG_MODALITIES_IN_STUDY) {
            if let Some(s) = value_string(value) {
                for m in s.split('\\').map(str::trim).filter(|m| !m.is_empty()) {
                    if !modalities.iter().any(|x| x == m) {
                        modalities.push(m.to_owned());
                    }
                }
            }
        }
        hits.push(StudyHit {
            study_uid,
            patient_id: first_string(obj, TAG_PATIENT_ID),
            study_date: first_string(obj, TAG_STUDY_DATE),
            modalities,
            number_of_instances: first_u64(obj, TAG_STUDY_INSTANCES),
        });
    }
    Ok(hits)
}

/// Parse a DICOM JSON QIDO-RS series response (see [`parse_qido_studies`]); a result without
/// SeriesInstanceUID is an error.
pub fn parse_qido_series(json: &[u8]) -> Result<Vec<SeriesHit>, DicomWebError> {
    let objects = qido_objects(json)?;
    let mut hits = Vec::with_capacity(objects.len());
    for (i, obj) in objects.iter().enumerate() {
        let series_uid = first_string(obj, TAG_SERIES_UID)
            .ok_or_else(|| qido_error(format!("result {i} has no SeriesInstanceUID (0020000E)")))?;
        hits.push(SeriesHit {
            series_uid,
            modality: first_string(obj, TAG_MODALITY),
            number_of_instances: first_u64(obj, TAG_SERIES_INSTANCES),
        });
    }
    Ok(hits)
}

fn qido_error(reason: String) -> DicomWebError {
    DicomWebError::Qido {
        url: None,
        study_uid: None,
        reason,
    }
}

fn qido_objects(json: &[u8]) -> Result<Vec<Map<String, Value>>, DicomWebError> {
    if json.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Vec::new());
    }
    let value: Value =
        serde_json::from_slice(json).map_err(|e| qido_error(format!("not valid JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(qido_error("the top level is not a JSON array".to_owned()));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(obj) => Ok(obj),
            _ => Err(qido_error(format!("result {i} is not a JSON object"))),
        })
        .collect()
}

/// The values of one attribute; tolerates lower-case tags and a bare value instead of an array.
fn values<'a>(obj: &'a Map<String, Value>, tag: &str) -> Vec<&'a Value> {
    let attr = obj.get(tag).or_else(|| obj.get(&tag.to_ascii_lowercase()));
    let value = match attr {
        Some(Value::Object(attr)) => attr.get("Value"),
        Some(other) => Some(other),
        None => None,
    };
    match value {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(single) => vec![single],
    }
}

/// A value as text: strings (trimmed), numbers, and PN objects (their Alphabetic group).
fn value_string(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Object(pn) => match pn
            .get("Alphabetic")
            .or_else(|| pn.get("Ideographic"))
            .or_else(|| pn.get("Phonetic"))
        {
            Some(Value::String(s)) => s.trim().to_owned(),
            _ => return None,
        },
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

fn first_string(obj: &Map<String, Value>, tag: &str) -> Option<String> {
    values(obj, tag).into_iter().find_map(value_string)
}

fn first_u64(obj: &Map<String, Value>, tag: &str) -> Option<u64> {
    values(obj, tag).into_iter().find_map(|value| match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// multipart/related

/// Parse a whole `multipart/related` body (RFC 2046) given its boundary (without the leading
/// `--`). Returns each part's content, headers removed, in order; empty parts are kept.
///
/// Delimiters are recognised only at the start of a line (`--boundary`, optional spaces/tabs,
/// then CRLF or LF); the line break before a delimiter belongs to the delimiter. The preamble
/// and the epilogue are ignored. A body without the closing `--boundary--` is
/// [`DicomWebError::Truncated`].
pub fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<Vec<u8>>, DicomWebError> {
    let mut parser = MultipartParser::new(boundary, MAX_PARTS)?;
    for chunk in body.chunks(READ_CHUNK) {
        parser.feed(chunk)?;
    }
    parser.finish()
}

/// The boundary parameter of a multipart Content-Type header (quoted or not).
fn multipart_boundary(content_type: &str) -> Result<String, String> {
    let mut segments = split_header_params(content_type).into_iter();
    let media_type = segments
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !media_type.starts_with("multipart/") {
        return Err("expected multipart/related".to_owned());
    }
    for param in segments {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("boundary") {
            let boundary = unquote(value.trim());
            return if boundary.is_empty() {
                Err("empty boundary parameter".to_owned())
            } else {
                Ok(boundary)
            };
        }
    }
    Err("no boundary parameter".to_owned())
}

/// Split a header value at `;` outside quoted strings.
fn split_header_params(header: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in header.chars() {
        if in_quotes {
            current.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
        } else if c == ';' {
            out.push(std::mem::take(&mut current));
        } else {
            if c == '"' {
                in_quotes = true;
            }
            current.push(c);
        }
    }
    out.push(current);
    out
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"') else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MultipartState {
    Preamble,
    Part,
    Epilogue,
}

/// Incremental multipart parser: fed chunk by chunk, it keeps only the current part and a short
/// tail of unconsumed input (a delimiter may straddle two chunks).
struct MultipartParser {
    dash_boundary: Vec<u8>,
    buf: Vec<u8>,
    /// `buf[0]` is at the start of a line (body start, or right after a delimiter line).
    at_line_start: bool,
    state: MultipartState,
    current: Vec<u8>,
    parts: Vec<Vec<u8>>,
    max_parts: usize,
}

enum Scan {
    /// A delimiter line: part content ends at `content_end`, the line ends at `end`.
    Delimiter {
        content_end: usize,
        end: usize,
        close: bool,
    },
    /// No delimiter yet: the first `consumed` bytes are content; keep the rest for more input.
    Content { consumed: usize },
}

enum Candidate {
    No,
    Undecided,
    Yes { end: usize, close: bool },
}

fn multipart_error(reason: String) -> DicomWebError {
    DicomWebError::Multipart {
        url: None,
        study_uid: None,
        reason,
    }
}

impl MultipartParser {
    fn new(boundary: &str, max_parts: usize) -> Result<Self, DicomWebError> {
        if boundary.is_empty() {
            return Err(multipart_error("empty boundary".to_owned()));
        }
        if boundary.len() > MAX_BOUNDARY_LEN {
            return Err(multipart_error(format!(
                "boundary longer than {MAX_BOUNDARY_LEN} bytes"
            )));
        }
        if boundary.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(multipart_error("boundary contains a line break".to_owned()));
        }
        let mut dash_boundary = b"--".to_vec();
        dash_boundary.extend_from_slice(boundary.as_bytes());
        Ok(MultipartParser {
            dash_boundary,
            buf: Vec::new(),
            at_line_start: true,
            state: MultipartState::Preamble,
            current: Vec::new(),
            parts: Vec::new(),
            max_parts,
        })
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), DicomWebError> {
        if self.state == MultipartState::Epilogue {
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        self.process(false)
    }

    fn finish(mut self) -> Result<Vec<Vec<u8>>, DicomWebError> {
        self.process(true)?;
        match self.state {
            MultipartState::Epilogue => Ok(self.parts),
            MultipartState::Preamble => Err(multipart_error(format!(
                "the boundary delimiter {:?} never appears",
                String::from_utf8_lossy(&self.dash_boundary)
            ))),
            MultipartState::Part => Err(DicomWebError::Truncated {
                url: None,
                study_uid: None,
                complete_parts: self.parts.len(),
            }),
        }
    }

    fn process(&mut self, eof: bool) -> Result<(), DicomWebError> {
        let mut pos = 0usize;
        let result = loop {
            if self.state == MultipartState::Epilogue {
                pos = self.buf.len();
                break Ok(());
            }
            let scan = scan_delimiter(
                &self.buf[pos..],
                self.at_line_start,
                &self.dash_boundary,
                eof,
            );
            match scan {
                Scan::Delimiter {
                    content_end,
                    end,
                    close,
                } => {
                    if self.state == MultipartState::Part {
                        self.current
                            .extend_from_slice(&self.buf[pos..pos + content_end]);
                        if let Err(e) = self.finish_part() {
                            break Err(e);
                        }
                    }
                    pos += end;
                    self.at_line_start = true;
                    self.state = if close {
                        MultipartState::Epilogue
                    } else {
                        MultipartState::Part
                    };
                }
                Scan::Content { consumed } => {
                    if self.state == MultipartState::Part {
                        self.current
                            .extend_from_slice(&self.buf[pos..pos + consumed]);
                    }
                    if consumed > 0 {
                        self.at_line_start = false;
                    }
                    pos += consumed;
                    break Ok(());
                }
            }
        };
        self.buf.drain(..pos);
        result
    }

    fn finish_part(&mut self) -> Result<(), DicomWebError> {
        let mut raw = std::mem::take(&mut self.current);
        let number = self.parts.len() + 1;
        if self.parts.len() >= self.max_parts {
            return Err(DicomWebError::TooManyParts {
                url: None,
                study_uid: None,
                limit: self.max_parts,
            });
        }
        let body_start = part_body_start(&raw)
            .map_err(|reason| multipart_error(format!("part {number}: {reason}")))?;
        raw.drain(..body_start);
        raw.shrink_to_fit();
        self.parts.push(raw);
        Ok(())
    }
}

/// Find the first delimiter line in `s`. Candidates are line starts: `s[0]` if `at_line_start`,
/// and every byte after a `\n`. The line break before a delimiter (`\n` or `\r\n`) is not content.
fn scan_delimiter(s: &[u8], at_line_start: bool, dash_boundary: &[u8], eof: bool) -> Scan {
    let content_end_before = |newline: usize| {
        if newline > 0 && s[newline - 1] == b'\r' {
            newline - 1
        } else {
            newline
        }
    };
    if at_line_start {
        match delimiter_at(s, 0, dash_boundary, eof) {
            Candidate::Yes { end, close } => {
                return Scan::Delimiter {
                    content_end: 0,
                    end,
                    close,
                }
            }
            Candidate::Undecided => return Scan::Content { consumed: 0 },
            Candidate::No => {}
        }
    }
    let mut from = 0usize;
    while let Some(offset) = s[from..].iter().position(|&b| b == b'\n') {
        let newline = from + offset;
        match delimiter_at(s, newline + 1, dash_boundary, eof) {
            Candidate::Yes { end, close } => {
                return Scan::Delimiter {
                    content_end: content_end_before(newline),
                    end,
                    close,
                }
            }
            Candidate::Undecided => {
                return Scan::Content {
                    consumed: content_end_before(newline),
                }
            }
            Candidate::No => {}
        }
        from = newline + 1;
    }
    // Keep a trailing '\r': it may be the start of the line break before a delimiter.
    let consumed = if !eof && s.last() == Some(&b'\r') {
        s.len() - 1
    } else {
        s.len()
    };
    Scan::Content { consumed }
}

/// Is there a delimiter line starting at `s[p]`? `Undecided` if more input is needed to know.
fn delimiter_at(s: &[u8], p: usize, dash_boundary: &[u8], eof: bool) -> Candidate {
    let more = if eof {
        Candidate::No
    } else {
        Candidate::Undecided
    };
    let rest = &s[p..];
    if rest.len() < dash_boundary.len() {
        return if dash_boundary.starts_with(rest) {
            more
        } else {
            Candidate::No
        };
    }
    if !rest.starts_with(dash_boundary) {
        return Candidate::No;
    }
    let after = &rest[dash_boundary.len()..];
    let base = p + dash_boundary.len();
    match after.first() {
        None => more,
        Some(b'-') => match after.get(1) {
            None => more,
            Some(b'-') => Candidate::Yes {
                end: base + 2,
                close: true,
            },
            Some(_) => Candidate::No,
        },
        Some(_) => {
            let padding = after
                .iter()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
            match after.get(padding) {
                None => more,
                Some(b'\n') => Candidate::Yes {
                    end: base + padding + 1,
                    close: false,
                },
                Some(b'\r') => match after.get(padding + 1) {
                    None => more,
                    Some(b'\n') => Candidate::Yes {
                        end: base + padding + 2,
                        close: false,
                    },
                    Some(_) => Candidate::No,
                },
                Some(_) => Candidate::No,
            }
        }
    }
}

/// Where a raw part's content starts: after its header lines and the blank line. A part that
/// starts with a blank line has no headers; a part made only of header lines has no content.
fn part_body_start(raw: &[u8]) -> Result<usize, String> {
    let mut pos = 0usize;
    while pos < raw.len() {
        let (line, next) = match raw[pos..].iter().position(|&b| b == b'\n') {
            Some(offset) => (&raw[pos..pos + offset], pos + offset + 1),
            None => (&raw[pos..], raw.len()),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(next);
        }
        let continuation = pos > 0 && (line[0] == b' ' || line[0] == b'\t');
        let valid_field = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                colon > 0
                    && line[..colon]
                        .iter()
                        .all(|&b| b.is_ascii_graphic() && b != b':')
            }
            None => false,
        };
        let clean = line.iter().all(|&b| b == b'\t' || b >= 0x20) && !line.contains(&0x7f);
        if !(clean && (valid_field || continuation)) {
            return Err(if pos == 0 {
                "does not start with MIME headers and a blank line".to_owned()
            } else {
                "malformed MIME header line".to_owned()
            });
        }
        if next > MAX_PART_HEADER_BYTES {
            return Err(format!("headers longer than {MAX_PART_HEADER_BYTES} bytes"));
        }
        pos = next;
    }
    Ok(raw.len())
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    fn parse_chunked(
        body: &[u8],
        boundary: &str,
        chunk: usize,
    ) -> Result<Vec<Vec<u8>>, DicomWebError> {
        let mut parser = MultipartParser::new(boundary, MAX_PARTS)?;
        for piece in body.chunks(chunk) {
            parser.feed(piece)?;
        }
        parser.finish()
    }

    /// Parse whole and in every small chunk size; all must agree.
    fn parse_all_ways(body: &[u8], boundary: &str) -> Result<Vec<Vec<u8>>, DicomWebError> {
        let whole = parse_multipart(body, boundary);
        for chunk in 1..=9 {
            let chunked = parse_chunked(body, boundary, chunk);
            assert_eq!(
                format!("{whole:?}"),
                format!("{chunked:?}"),
                "chunk size {chunk} disagrees"
            );
        }
        whole
    }

    // --- multipart ---

    #[test]
    fn multipart_crlf_two_parts() {
        let body = b"--XyZ\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--XyZ\r\nContent-Type: application/dicom\r\nContent-Length: 6\r\n\r\nsecond\r\n--XyZ--\r\n";
        let parts = parse_all_ways(body, "XyZ").unwrap();
        assert_eq!(parts, vec![b"first".to_vec(), b"second".to_vec()]);
    }

    #[test]
    fn multipart_lf_only_and_mixed_line_ends() {
        let body = b"--b\nContent-Type: application/dicom\n\nA\n--b\r\nContent-Type: application/dicom\r\n\nB\r\n--b--";
        let parts = parse_all_ways(body, "b").unwrap();
        assert_eq!(parts, vec![b"A".to_vec(), b"B".to_vec()]);
    }

    #[test]
    fn multipart_preamble_epilogue_and_padding() {
        let body = b"This is the preamble.\r\n--not the boundary\r\n--bb\r\n--b  \t\r\nContent-Type: application/dicom\r\n\r\npayload\r\n--b-- \r\nepilogue --b\r\n--b\r\nignored\r\n";
        // "--not the boundary" and "--bb" are preamble; "--b  \t" has transport padding.
        let parts = parse_all_ways(body, "b").unwrap();
        assert_eq!(parts, vec![b"payload".to_vec()]);
    }

    #[test]
    fn multipart_preamble_first_line_is_delimiter_after_crlf() {
        let body = b"\r\n--b\r\nX-A: 1\r\n\r\nz\r\n--b--";
        assert_eq!(parse_all_ways(body, "b").unwrap(), vec![b"z".to_vec()]);
    }

    #[test]
    fn multipart_empty_parts() {
        // headers then empty content; no headers and empty content; nothing at all.
        let body = b"--b\r\nContent-Type: application/dicom\r\n\r\n\r\n--b\r\n\r\n\r\n--b\r\n--b\r\nContent-Type: application/dicom\r\n--b--\r\n";
        let parts = parse_all_ways(body, "b").unwrap();
        assert_eq!(parts, vec![Vec::<u8>::new(); 4]);
    }

    #[test]
    fn multipart_no_parts() {
        assert_eq!(
            parse_all_ways(b"--b--\r\n", "b").unwrap(),
            Vec::<Vec<u8>>::new()
        );
    }

    #[test]
    fn multipart_boundary_inside_payload_is_data() {
        let payload: &[u8] = b"abc--bnd\r\nx --bnd--\r\n\r\n--bndX\r\n--bnd-x\r\n\x00\xff\r\n";
        let mut body = b"--bnd\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
        body.extend_from_slice(payload);
        body.extend_from_slice(b"\r\n--bnd--\r\n");
        let parts = parse_all_ways(&body, "bnd").unwrap();
        assert_eq!(parts, vec![payload.to_vec()]);
    }

    #[test]
    fn multipart_binary_payload_with_line_breaks_is_untouched() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut body = b"--0123abc\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
        body.extend_from_slice(&payload);
        body.extend_from_slice(b"\r\n--0123abc\r\nContent-Type: application/dicom\r\n\r\n\r\n\r\n");
        body.extend_from_slice(b"\r\n--0123abc--");
        let parts = parse_all_ways(&body, "0123abc").unwrap();
        assert_eq!(parts, vec![payload, b"\r\n\r\n".to_vec()]);
    }

    #[test]
    fn multipart_truncated_is_an_error() {
        for body in [
            &b"--b\r\nContent-Type: application/dicom\r\n\r\npart one\r\n--b\r\nContent-Type: application/dicom\r\n\r\nhalf a par"[..],
            b"--b\r\nContent-Type: application/dicom\r\n\r\nx\r\n--b",
            b"--b\r\nContent-Type: application/dicom\r\n\r\nx\r\n--b-",
            b"--b\r\nContent-Type: application/dicom\r\n\r\nx\r\n--b\r\n",
        ] {
            match parse_all_ways(body, "b") {
                Err(DicomWebError::Truncated { complete_parts, .. }) => assert!(complete_parts <= 1),
                other => panic!("expected Truncated, got {other:?}"),
            }
        }
        let err = parse_multipart(b"no delimiter here", "b").unwrap_err();
        assert!(matches!(err, DicomWebError::Multipart { .. }), "{err:?}");
        let err = parse_multipart(b"", "b").unwrap_err();
        assert!(matches!(err, DicomWebError::Multipart { .. }), "{err:?}");
    }

    #[test]
    fn multipart_truncated_error_names_study() {
        let err = parse_multipart(b"--b\r\n\r\nx", "b")
            .unwrap_err()
            .in_context("http://pacs/dicom-web/studies/1.2.3", Some("1.2.3"));
        let text = err.to_string();
        assert!(
            text.contains("1.2.3") && text.contains("truncated"),
            "{text}"
        );
    }

    #[test]
    fn multipart_part_without_headers_is_an_error() {
        let body = b"--b\r\n\x00\x00\x00\x00DICM\x02\x00\r\n\r\nmore\r\n--b--";
        let err = parse_multipart(body, "b").unwrap_err();
        assert!(err.to_string().contains("part 1"), "{err}");
    }

    #[test]
    fn multipart_part_limit() {
        let body = b"--b\r\n\r\n1\r\n--b\r\n\r\n2\r\n--b\r\n\r\n3\r\n--b--";
        let mut parser = MultipartParser::new("b", 2).unwrap();
        let err = parser.feed(body).unwrap_err();
        assert!(
            matches!(err, DicomWebError::TooManyParts { limit: 2, .. }),
            "{err:?}"
        );
        let mut parser = MultipartParser::new("b", 3).unwrap();
        parser.feed(body).unwrap();
        assert_eq!(parser.finish().unwrap().len(), 3);
    }

    #[test]
    fn multipart_bad_boundary() {
        assert!(parse_multipart(b"--\r\n", "").is_err());
        assert!(parse_multipart(b"", "a\r\nb").is_err());
    }

    #[test]
    fn boundary_from_content_type() {
        let cases = [
            (
                "multipart/related; type=\"application/dicom\"; boundary=abc123",
                "abc123",
            ),
            (
                "multipart/related; type=\"application/dicom\"; boundary=\"ab;c 12=3\"",
                "ab;c 12=3",
            ),
            (
                "Multipart/Related;Boundary=\"q\\\"x\";type=application/dicom",
                "q\"x",
            ),
            (
                "multipart/related; type=\"application/dicom; x=1\"; boundary= zz ",
                "zz",
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(multipart_boundary(header).unwrap(), expected, "{header}");
        }
        assert!(multipart_boundary("application/dicom").is_err());
        assert!(multipart_boundary("multipart/related; type=\"application/dicom\"").is_err());
        assert!(multipart_boundary("multipart/related; boundary=\"\"").is_err());
        assert!(multipart_boundary("").is_err());
    }

    // --- QIDO JSON ---

    #[test]
    fn qido_studies_typical_response() {
        let json = br#"[
          {"00080020": {"vr": "DA", "Value": ["20190315"]},
           "00080061": {"vr": "CS", "Value": ["CT", "MR", "CT"]},
           "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Fake^Alice"}]},
           "00100020": {"vr": "LO", "Value": ["FAKE0001"]},
           "0020000D": {"vr": "UI", "Value": ["1.2.3.4"]},
           "00201208": {"vr": "IS", "Value": [5]}},
          {"0020000D": {"vr": "UI", "Value": ["1.2.3.5"]},
           "00100020": {"vr": "LO"},
           "00080020": {"vr": "DA", "Value": []},
           "00080061": {"vr": "CS", "Value": ["CT\\SR"]},
           "00201208": {"vr": "IS", "Value": ["12 "]}}
        ]"#;
        let hits = parse_qido_studies(json).unwrap();
        assert_eq!(
            hits,
            vec![
                StudyHit {
                    study_uid: "1.2.3.4".into(),
                    patient_id: Some("FAKE0001".into()),
                    study_date: Some("20190315".into()),
                    modalities: vec!["CT".into(), "MR".into()],
                    number_of_instances: Some(5),
                },
                StudyHit {
                    study_uid: "1.2.3.5".into(),
                    patient_id: None,
                    study_date: None,
                    modalities: vec!["CT".into(), "SR".into()],
                    number_of_instances: Some(12),
                },
            ]
        );
    }

    #[test]
    fn qido_pn_object_and_odd_values() {
        let json = br#"[{"0020000d": {"vr": "UI", "Value": ["1.2.840.1 "]},
                         "00100020": {"vr": "PN", "Value": [{"Alphabetic": "ID^AS^PN"}]},
                         "00080020": {"vr": "DA", "Value": [null]},
                         "00080061": {"vr": "CS", "Value": [null, "", "US"]},
                         "00201208": {"vr": "IS", "Value": [-3]},
                         "7FE00010": {"vr": "OB", "BulkDataURI": "http://x/y"}}]"#;
        let hits = parse_qido_studies(json).unwrap();
        assert_eq!(hits[0].study_uid, "1.2.840.1");
        assert_eq!(hits[0].patient_id.as_deref(), Some("ID^AS^PN"));
        assert_eq!(hits[0].study_date, None);
        assert_eq!(hits[0].modalities, vec!["US".to_string()]);
        assert_eq!(hits[0].number_of_instances, None);
    }

    #[test]
    fn qido_empty_and_malformed() {
        assert!(parse_qido_studies(b"").unwrap().is_empty());
        assert!(parse_qido_studies(b"  \n").unwrap().is_empty());
        assert!(parse_qido_studies(b"[]").unwrap().is_empty());
        for bad in [
            &b"{}"[..],
            b"[1]",
            b"[{\"00100020\": {\"vr\": \"LO\", \"Value\": [\"P\"]}}]",
            b"<html>login</html>",
            b"[{\"0020000D\": {\"vr\": \"UI\"}}]",
        ] {
            let err = parse_qido_studies(bad).unwrap_err();
            assert!(matches!(err, DicomWebError::Qido { .. }), "{err:?}");
        }
    }

    #[test]
    fn qido_series() {
        let json = br#"[{"0020000E": {"vr": "UI", "Value": ["1.2.3.4.1"]},
                         "00080060": {"vr": "CS", "Value": ["CT"]},
                         "00201209": {"vr": "IS", "Value": [3]}},
                        {"0020000E": {"vr": "UI", "Value": ["1.2.3.4.2"]}}]"#;
        let hits = parse_qido_series(json).unwrap();
        assert_eq!(
            hits,
            vec![
                SeriesHit {
                    series_uid: "1.2.3.4.1".into(),
                    modality: Some("CT".into()),
                    number_of_instances: Some(3)
                },
                SeriesHit {
                    series_uid: "1.2.3.4.2".into(),
                    modality: None,
                    number_of_instances: None
                },
            ]
        );
        assert!(parse_qido_series(br#"[{"00080060": {"vr": "CS", "Value": ["CT"]}}]"#).is_err());
    }

    // --- queries and dates ---

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_parsing() {
        assert_eq!(
            parse_query("PatientID=FAKE0001&StudyDate=2019-2020&ModalitiesInStudy=CT").unwrap(),
            pairs(&[
                ("PatientID", "FAKE0001"),
                ("StudyDate", "2019-2020"),
                ("ModalitiesInStudy", "CT")
            ])
        );
        assert_eq!(
            parse_query(
                "?PatientName=Fake%5EAlice%20B+C&&0010002f=&00080061=CT%2CMR&Seq.00100020=x"
            )
            .unwrap(),
            pairs(&[
                ("PatientName", "Fake^Alice B+C"),
                ("0010002F", ""),
                ("00080061", "CT,MR"),
                ("Seq.00100020", "x"),
            ])
        );
        assert!(parse_query("").unwrap().is_empty());
        for bad in [
            "limit=5",
            "patientid=x",
            "PatientID",
            "Patient ID=x",
            "0010002=x",
            "0010002G=x",
            "PatientID=%zz",
            "PatientID=%4",
            "PatientID=%ff",
            "=x",
            "Seq.=x",
            "includefield=00100010",
        ] {
            let err = parse_query(bad).unwrap_err();
            assert!(
                matches!(err, DicomWebError::InvalidQuery { .. }),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn date_ranges() {
        let ok = [
            ("2019-2020", "20190101-20201231"),
            ("20190101-20191231", "20190101-20191231"),
            ("2019", "20190101-20191231"),
            ("20190315", "20190315"),
            ("202002", "20200201-20200229"),
            ("190002-190002", "19000201-19000228"),
            ("2019-", "20190101-"),
            ("-2019", "-20191231"),
            ("201903-2020", "20190301-20201231"),
            (" 2019 - 2020 ", "20190101-20201231"),
            ("", ""),
        ];
        for (input, expected) in ok {
            assert_eq!(
                normalize_date_value("StudyDate", input).unwrap(),
                expected,
                "{input}"
            );
        }
        for bad in [
            "2019-20",
            "abc",
            "20191301",
            "20190230",
            "2021-2019",
            "-",
            "2019-03-15",
            "201",
        ] {
            let err = normalize_date_value("StudyDate", bad).unwrap_err();
            assert!(err.to_string().contains("StudyDate"), "{err}");
        }
        assert!(
            is_date_key("StudyDate") && is_date_key("00080020") && is_date_key("PatientBirthDate")
        );
        assert!(!is_date_key("PatientID") && !is_date_key("StudyTime"));
    }

    #[test]
    fn qido_url_encoding() {
        let url = qido_url(
            "http://h/dw/studies",
            &pairs(&[
                ("PatientName", "Fake^A*"),
                ("StudyDate", "20190101-20201231"),
                ("StudyDescription", "a b&c=d+e%f#g\\h/é?,:"),
            ]),
            &["00080061"],
            100,
            200,
        );
        assert_eq!(
            url,
            "http://h/dw/studies?PatientName=Fake^A*&StudyDate=20190101-20201231&StudyDescription=a%20b%26c%3Dd%2Be%25f%23g%5Ch%2F%C3%A9?,:&includefield=00080061&limit=100&offset=200"
        );
    }

    #[test]
    fn base_urls() {
        let c = Client::new("http://127.0.0.1:18042/dicom-web//").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:18042/dicom-web");
        assert_eq!(
            Client::new("HTTPS://pacs.example/dw").unwrap().base_url(),
            "HTTPS://pacs.example/dw"
        );
        assert_eq!(
            Client::new("http://[::1]:8042").unwrap().base_url(),
            "http://[::1]:8042"
        );
        for bad in [
            "ftp://h/x",
            "127.0.0.1:8042/dicom-web",
            "http://",
            "http:///dw",
            "http://user:pw@h/dw",
            "http://h/dw?x=1",
            "http://h/d w",
            "http://h:port/dw",
            "http://h:99999/dw",
            "http://[::1/dw",
        ] {
            let err = Client::new(bad).unwrap_err();
            assert!(
                matches!(err, DicomWebError::InvalidBaseUrl { .. }),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn uids_and_debug_redaction() {
        assert!(validate_uid("1.2.840.10008.1").is_ok());
        for bad in ["", "1.2/3", "..", "1.2?x", "1 2", "1.2%2F"] {
            assert!(validate_uid(bad).is_err(), "{bad}");
        }
        let c = Client::new("http://h/dw")
            .unwrap()
            .with_basic_auth("alice", "s3cret");
        let debug = format!("{c:?}");
        assert!(
            debug.contains("alice") && !debug.contains("s3cret"),
            "{debug}"
        );
        assert_eq!(c.auth_header.as_deref(), Some("Basic YWxpY2U6czNjcmV0"));
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
    }

    // --- HTTP behaviour against a tiny local server ---

    /// Serves `responses.len()` connections on 127.0.0.1, one canned response each, recording
    /// each request head. Every response closes its connection.
    fn mock_server(responses: Vec<Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_server = Arc::clone(&seen);
        std::thread::spawn(move || {
            for response in responses {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let head = read_request_head(&mut stream);
                seen_by_server.lock().unwrap().push(head);
                let _ = stream.write_all(&response);
                let _ = stream.flush();
            }
        });
        (format!("http://{addr}/dicom-web"), seen)
    }

    fn read_request_head(stream: &mut TcpStream) -> String {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    fn http_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }

    fn study_json(uids: std::ops::Range<usize>) -> Vec<u8> {
        let items: Vec<String> = uids
            .map(|i| format!(r#"{{"0020000D":{{"vr":"UI","Value":["1.2.{i}"]}}}}"#))
            .collect();
        format!("[{}]", items.join(",")).into_bytes()
    }

    #[test]
    fn search_follows_paging_and_encodes_query() {
        let json = [("Content-Type", "application/dicom+json")];
        let (url, seen) = mock_server(vec![
            http_response("200 OK", &json, &study_json(0..100)),
            http_response("200 OK", &json, &study_json(100..103)),
        ]);
        let client = Client::new(&url).unwrap().with_basic_auth("u", "p");
        let query = parse_query(
            "PatientID=FAKE%200001&StudyDate=2019-2020&ModalitiesInStudy=CT&PatientName=F%5Ea*",
        )
        .unwrap();
        let hits = client.search_studies(&query).unwrap();
        assert_eq!(hits.len(), 103);
        assert_eq!(hits[102].study_uid, "1.2.102");
        let seen = seen.lock().unwrap();
        assert!(seen[0].starts_with("GET /dicom-web/studies?PatientID=FAKE%200001&StudyDate=20190101-20201231&ModalitiesInStudy=CT&PatientName=F^a*&includefield="), "{}", seen[0]);
        assert!(seen[0].contains("limit=100&offset=0 "), "{}", seen[0]);
        assert!(seen[1].contains("limit=100&offset=100 "), "{}", seen[1]);
        assert!(
            seen[0].contains("Authorization: Basic dTpw\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].contains("Accept: application/dicom+json\r\n"),
            "{}",
            seen[0]
        );
    }

    #[test]
    fn search_stops_when_server_ignores_offset() {
        let json = [("Content-Type", "application/dicom+json")];
        let (url, seen) = mock_server(vec![
            http_response("200 OK", &json, &study_json(0..100)),
            http_response("200 OK", &json, &study_json(0..100)),
            http_response("200 OK", &json, &study_json(0..100)),
        ]);
        let hits = Client::new(&url).unwrap().search_studies(&[]).unwrap();
        assert_eq!(hits.len(), 100);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn search_rejects_bad_keys_and_dates_before_any_request() {
        let client = Client::new("http://127.0.0.1:9/dw").unwrap();
        let err = client
            .search_studies(&pairs(&[("offset", "5")]))
            .unwrap_err();
        assert!(matches!(err, DicomWebError::InvalidQuery { .. }), "{err:?}");
        let err = client
            .search_studies(&pairs(&[("StudyDate", "2019-20")]))
            .unwrap_err();
        assert!(matches!(err, DicomWebError::InvalidQuery { .. }), "{err:?}");
    }

    #[test]
    fn retrieve_falls_back_on_406() {
        let body = b"--abc\r\nContent-Type: application/dicom\r\n\r\nFILE1\r\n--abc\r\nContent-Type: application/dicom\r\n\r\nFILE2\r\n--abc--\r\n";
        let (url, seen) = mock_server(vec![
            http_response("406 Not Acceptable", &[], b"no such transfer syntax"),
            http_response(
                "200 OK",
                &[(
                    "Content-Type",
                    "multipart/related; type=\"application/dicom\"; boundary=\"abc\"",
                )],
                body,
            ),
        ]);
        let parts = Client::new(&url).unwrap().retrieve_study("1.2.3").unwrap();
        assert_eq!(parts, vec![b"FILE1".to_vec(), b"FILE2".to_vec()]);
        let seen = seen.lock().unwrap();
        assert!(
            seen[0].starts_with("GET /dicom-web/studies/1.2.3 "),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains("transfer-syntax=*"), "{}", seen[0]);
        assert!(!seen[1].contains("transfer-syntax"), "{}", seen[1]);
        assert!(
            seen[1].contains("Accept: multipart/related; type=\"application/dicom\"\r\n"),
            "{}",
            seen[1]
        );
    }

    #[test]
    fn retrieve_errors_are_clean() {
        let long_body = "x".repeat(1000);
        let ct = [(
            "Content-Type",
            "multipart/related; type=\"application/dicom\"; boundary=b",
        )];
        let (url, _) = mock_server(vec![
            http_response("404 Not Found", &[], b"Unknown resource"),
            http_response("500 Internal Server Error", &[], long_body.as_bytes()),
            http_response(
                "200 OK",
                &ct,
                b"--b\r\nContent-Type: application/dicom\r\n\r\nhalf",
            ),
            http_response("200 OK", &[("Content-Type", "application/json")], b"[]"),
            http_response("200 OK", &ct, b"--b--"),
            http_response("204 No Content", &[], b""),
        ]);
        let client = Client::new(&url).unwrap();

        let err = client.retrieve_study("1.2.404").unwrap_err();
        assert!(
            matches!(&err, DicomWebError::NotFound { study_uid, .. } if study_uid == "1.2.404"),
            "{err:?}"
        );
        assert!(err.to_string().contains("study 1.2.404 not found"), "{err}");

        let err = client.retrieve_series("1.2.500", "1.2.500.1").unwrap_err();
        match &err {
            DicomWebError::Http {
                status: 500,
                body,
                study_uid,
                url,
            } => {
                assert_eq!(body.chars().count(), 200);
                assert_eq!(study_uid.as_deref(), Some("1.2.500"));
                assert!(url.ends_with("/studies/1.2.500/series/1.2.500.1"), "{url}");
            }
            other => panic!("{other:?}"),
        }

        let err = client.retrieve_study("1.2.7").unwrap_err();
        assert!(
            matches!(
                err,
                DicomWebError::Truncated {
                    complete_parts: 0,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("study 1.2.7"), "{err}");

        let err = client.retrieve_study("1.2.8").unwrap_err();
        assert!(matches!(err, DicomWebError::ContentType { .. }), "{err:?}");

        let err = client.retrieve_study("1.2.9").unwrap_err();
        assert!(matches!(err, DicomWebError::NotFound { .. }), "{err:?}");

        let err = client.retrieve_study("1.2.10").unwrap_err();
        assert!(matches!(err, DicomWebError::NotFound { .. }), "{err:?}");

        let err = client.retrieve_study("1/../2").unwrap_err();
        assert!(matches!(err, DicomWebError::InvalidUid { .. }), "{err:?}");
    }

    #[test]
    fn retrieve_refuses_huge_content_length() {
        let response = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: multipart/related; boundary=b\r\nContent-Length: 4294967297\r\n\r\n--b\r\n".to_vec();
        let (url, _) = mock_server(vec![response]);
        let err = Client::new(&url)
            .unwrap()
            .retrieve_study("1.2.3")
            .unwrap_err();
        assert!(matches!(err, DicomWebError::BodyTooLarge { .. }), "{err:?}");
    }

    #[test]
    fn series_search_and_404() {
        let (url, seen) = mock_server(vec![
            http_response(
                "200 OK",
                &[("Content-Type", "application/dicom+json")],
                br#"[{"0020000E":{"vr":"UI","Value":["1.2.3.1"]},"00080060":{"vr":"CS","Value":["MR"]}}]"#,
            ),
            http_response("404 Not Found", &[], b""),
        ]);
        let client = Client::new(&url).unwrap();
        let series = client.search_series("1.2.3").unwrap();
        assert_eq!(series[0].modality.as_deref(), Some("MR"));
        assert!(seen.lock().unwrap()[0]
            .starts_with("GET /dicom-web/studies/1.2.3/series?includefield="));
        let err = client.search_series("1.2.4").unwrap_err();
        assert!(matches!(err, DicomWebError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn connection_refused_is_clean() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = Client::new(&format!("http://{addr}/dicom-web")).unwrap();
        let err = client.search_studies(&[]).unwrap_err();
        assert!(matches!(err, DicomWebError::Connection { .. }), "{err:?}");
        let err = client.retrieve_study("1.2.3").unwrap_err();
        assert!(matches!(err, DicomWebError::Connection { .. }), "{err:?}");
    }

    // --- real PACS: Orthanc with the DICOMweb plugin ---

    const ORTHANC_BIN: &str = "Orthanc";
    const ORTHANC_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";
    const ORTHANC_HTTP_PORT: u16 = 18043;
    const ORTHANC_DICOM_PORT: u16 = 14243;

    /// Kills (by its own child handle) and removes the Orthanc started by the test.
    struct Orthanc {
        child: Option<std::process::Child>,
        dir: std::path::PathBuf,
    }

    impl Orthanc {
        fn start() -> Orthanc {
            let dir = std::path::PathBuf::from(format!(
                "/tmp/cohort-dicomweb-orthanc-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let config = serde_json::json!({
                "Name": "test",
                "StorageDirectory": dir.join("db"),
                "IndexDirectory": dir.join("db"),
                "HttpPort": ORTHANC_HTTP_PORT,
                "DicomPort": ORTHANC_DICOM_PORT,
                "RemoteAccessAllowed": false,
                "AuthenticationEnabled": false,
                "Plugins": [ORTHANC_PLUGIN],
                "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}
            });
            std::fs::write(
                dir.join("config.json"),
                serde_json::to_vec_pretty(&config).unwrap(),
            )
            .unwrap();
            let log = std::fs::File::create(dir.join("orthanc.log")).unwrap();
            let child = std::process::Command::new(ORTHANC_BIN)
                .arg(dir.join("config.json"))
                .current_dir(&dir)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("cannot start Orthanc (apt-get install orthanc orthanc-dicomweb)");
            let orthanc = Orthanc {
                child: Some(child),
                dir,
            };
            let agent = build_agent(Duration::from_secs(1), Duration::from_secs(5), None);
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while agent
                .get(&format!("{}/system", orthanc.root()))
                .call()
                .is_err()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "Orthanc did not answer within 30 s; see {:?}",
                    orthanc.dir
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            orthanc
        }

        fn root(&self) -> String {
            format!("http://127.0.0.1:{ORTHANC_HTTP_PORT}")
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for Orthanc {
        fn drop(&mut self) {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A small but complete DICOM Part-10 file (explicit VR little endian, Secondary Capture,
    /// 4x4 8-bit image). Fake data only.
    fn fake_dicom(
        patient: &str,
        study: &str,
        date: &str,
        series: &str,
        modality: &str,
        instance: u32,
    ) -> Vec<u8> {
        fn element(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) {
            let mut value = value.to_vec();
            if value.len() % 2 == 1 {
                value.push(if vr == b"UI" || vr == b"OB" { 0 } else { b' ' });
            }
            out.extend_from_slice(&group.to_le_bytes());
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(vr);
            if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&(value.len() as u16).to_le_bytes());
            }
            out.extend_from_slice(&value);
        }
        let sop_class = b"1.2.840.10008.5.1.4.1.1.7";
        let sop_instance = format!("{series}.{instance}");
        let mut meta = Vec::new();
        element(&mut meta, 0x0002, 0x0001, b"OB", &[0, 1]);
        element(&mut meta, 0x0002, 0x0002, b"UI", sop_class);
        element(&mut meta, 0x0002, 0x0003, b"UI", sop_instance.as_bytes());
        element(&mut meta, 0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1");
        element(
            &mut meta,
            0x0002,
            0x0012,
            b"UI",
            b"1.2.826.0.1.3680043.9.9999.1",
        );
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        element(
            &mut out,
            0x0002,
            0x0000,
            b"UL",
            &(meta.len() as u32).to_le_bytes(),
        );
        out.extend_from_slice(&meta);
        element(&mut out, 0x0008, 0x0016, b"UI", sop_class);
        element(&mut out, 0x0008, 0x0018, b"UI", sop_instance.as_bytes());
        element(&mut out, 0x0008, 0x0020, b"DA", date.as_bytes());
        element(&mut out, 0x0008, 0x0060, b"CS", modality.as_bytes());
        element(
            &mut out,
            0x0010,
            0x0010,
            b"PN",
            format!("Fake^{patient}").as_bytes(),
        );
        element(&mut out, 0x0010, 0x0020, b"LO", patient.as_bytes());
        element(&mut out, 0x0020, 0x000D, b"UI", study.as_bytes());
        element(&mut out, 0x0020, 0x000E, b"UI", series.as_bytes());
        element(
            &mut out,
            0x0020,
            0x0013,
            b"IS",
            instance.to_string().as_bytes(),
        );
        element(&mut out, 0x0028, 0x0002, b"US", &1u16.to_le_bytes());
        element(&mut out, 0x0028, 0x0004, b"CS", b"MONOCHROME2");
        element(&mut out, 0x0028, 0x0010, b"US", &4u16.to_le_bytes());
        element(&mut out, 0x0028, 0x0011, b"US", &4u16.to_le_bytes());
        element(&mut out, 0x0028, 0x0100, b"US", &8u16.to_le_bytes());
        element(&mut out, 0x0028, 0x0101, b"US", &8u16.to_le_bytes());
        element(&mut out, 0x0028, 0x0102, b"US", &7u16.to_le_bytes());
        element(&mut out, 0x0028, 0x0103, b"US", &0u16.to_le_bytes());
        let pixels: Vec<u8> = (0..16u8)
            .map(|p| p.wrapping_mul(16).wrapping_add(instance as u8))
            .collect();
        element(&mut out, 0x7FE0, 0x0010, b"OB", &pixels);
        out
    }

    /// (patient, study UID, study date, [(series UID, modality, instance count)])
    type StudyLayout = (
        &'static str,
        String,
        &'static str,
        Vec<(String, &'static str, u32)>,
    );

    fn sorted(mut files: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        files.sort();
        files
    }

    fn query(list: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs(list)
    }

    fn study_uids(hits: &[StudyHit]) -> Vec<String> {
        let mut uids: Vec<String> = hits.iter().map(|h| h.study_uid.clone()).collect();
        uids.sort();
        uids
    }

    #[test]
    #[ignore = "needs Orthanc and its DICOMweb plugin: apt-get install -y orthanc orthanc-dicomweb"]
    fn orthanc_end_to_end() {
        let mut orthanc = Orthanc::start();
        let upload = build_agent(Duration::from_secs(5), Duration::from_secs(30), None);
        let root = "2.25.900100";
        // (patient, study, date, [(series, modality, instances)])
        let layout: [StudyLayout; 3] = [
            (
                "FAKE0001",
                format!("{root}.1"),
                "20190315",
                vec![
                    (format!("{root}.1.1"), "CT", 3),
                    (format!("{root}.1.2"), "MR", 2),
                ],
            ),
            (
                "FAKE0001",
                format!("{root}.2"),
                "20210601",
                vec![(format!("{root}.2.1"), "CT", 2)],
            ),
            (
                "FAKE0002",
                format!("{root}.3"),
                "20201120",
                vec![(format!("{root}.3.1"), "MR", 2)],
            ),
        ];
        let mut by_study: std::collections::HashMap<String, Vec<Vec<u8>>> = Default::default();
        let mut by_series: std::collections::HashMap<String, Vec<Vec<u8>>> = Default::default();
        let post = |file: Vec<u8>| {
            let response = upload
                .post(&format!("{}/instances", orthanc.root()))
                .set("Content-Type", "application/dicom")
                .send_bytes(&file);
            assert!(response.is_ok(), "upload failed: {response:?}");
        };
        for (patient, study, date, series_list) in &layout {
            for (series, modality, count) in series_list {
                for instance in 1..=*count {
                    let file = fake_dicom(patient, study, date, series, modality, instance);
                    post(file.clone());
                    by_study
                        .entry(study.clone())
                        .or_default()
                        .push(file.clone());
                    by_series.entry(series.clone()).or_default().push(file);
                }
            }
        }
        // 105 single-instance studies of a third patient, to make the search page.
        for i in 0..105 {
            let study = format!("{root}.100.{i}");
            post(fake_dicom(
                "FAKEPAGE",
                &study,
                "20150101",
                &format!("{study}.1"),
                "OT",
                1,
            ));
        }

        let client = Client::new(&format!("{}/dicom-web/", orthanc.root())).unwrap();
        let (s1, s2, s3) = (
            format!("{root}.1"),
            format!("{root}.2"),
            format!("{root}.3"),
        );

        let hits = client
            .search_studies(&query(&[("PatientID", "FAKE0001")]))
            .unwrap();
        assert_eq!(study_uids(&hits), vec![s1.clone(), s2.clone()]);
        let first = hits.iter().find(|h| h.study_uid == s1).unwrap();
        assert_eq!(first.patient_id.as_deref(), Some("FAKE0001"));
        assert_eq!(first.study_date.as_deref(), Some("20190315"));
        let mut modalities = first.modalities.clone();
        modalities.sort();
        assert_eq!(modalities, vec!["CT".to_string(), "MR".to_string()]);
        assert_eq!(first.number_of_instances, Some(5));

        let hits = client
            .search_studies(&query(&[("StudyDate", "2019-2020")]))
            .unwrap();
        assert_eq!(study_uids(&hits), vec![s1.clone(), s3.clone()]);
        let hits = client
            .search_studies(&query(&[("PatientID", "FAKE0001"), ("StudyDate", "2019")]))
            .unwrap();
        assert_eq!(study_uids(&hits), vec![s1.clone()]);
        let hits = client
            .search_studies(&query(&[("StudyDate", "20210101-20211231")]))
            .unwrap();
        assert_eq!(study_uids(&hits), vec![s2.clone()]);
        let hits = client
            .search_studies(&query(&[("ModalitiesInStudy", "MR")]))
            .unwrap();
        assert_eq!(study_uids(&hits), vec![s1.clone(), s3.clone()]);
        let hits = client
            .search_studies(
                &parse_query("PatientID=FAKE0001&StudyDate=2019-2020&ModalitiesInStudy=CT")
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(study_uids(&hits), vec![s1.clone()]);
        // '^' and '*' reach Orthanc unencoded (it does not percent-decode QIDO values).
        let hits = client
            .search_studies(&parse_query("PatientName=Fake%5EFAKE000*").unwrap())
            .unwrap();
        assert_eq!(study_uids(&hits), vec![s1.clone(), s2.clone(), s3.clone()]);
        let hits = client
            .search_studies(&query(&[("PatientID", "NOBODY")]))
            .unwrap();
        assert!(hits.is_empty());

        // Paging: 105 studies come back through two pages of 100.
        let hits = client
            .search_studies(&query(&[("PatientID", "FAKEPAGE")]))
            .unwrap();
        assert_eq!(hits.len(), 105);
        assert_eq!(client.search_studies(&[]).unwrap().len(), 108);

        // WADO-RS returns the stored files byte for byte.
        for (study, files) in &by_study {
            let parts = client.retrieve_study(study).unwrap();
            assert_eq!(sorted(parts), sorted(files.clone()), "study {study}");
        }
        let series = client.search_series(&s1).unwrap();
        let mut found: Vec<(String, Option<String>, Option<u64>)> = series
            .into_iter()
            .map(|s| (s.series_uid, s.modality, s.number_of_instances))
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                (format!("{root}.1.1"), Some("CT".into()), Some(3)),
                (format!("{root}.1.2"), Some("MR".into()), Some(2)),
            ]
        );
        let series_uid = format!("{root}.1.2");
        let parts = client.retrieve_series(&s1, &series_uid).unwrap();
        assert_eq!(sorted(parts), sorted(by_series[&series_uid].clone()));

        let err = client.retrieve_study("2.25.404404").unwrap_err();
        assert!(matches!(err, DicomWebError::NotFound { .. }), "{err:?}");
        let err = client.retrieve_series(&s1, "2.25.404404").unwrap_err();
        assert!(matches!(err, DicomWebError::NotFound { .. }), "{err:?}");

        orthanc.stop();
        let err = client
            .search_studies(&query(&[("PatientID", "FAKE0001")]))
            .unwrap_err();
        assert!(matches!(err, DicomWebError::Connection { .. }), "{err:?}");
        let err = client.retrieve_study(&s1).unwrap_err();
        assert!(matches!(err, DicomWebError::Connection { .. }), "{err:?}");
    }
}
