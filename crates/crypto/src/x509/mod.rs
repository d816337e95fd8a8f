//! The SPIFFE X.509 CA: self-signed ECDSA P-256 CA certificates, and X.509-SVIDs signed from a
//! workload's certificate signing request (CSR).
//!
//! The profile follows the SPIFFE X.509-SVID standard. A CA certificate has `cA=true`, key usage
//! `keyCertSign` and `cRLSign`, and the trust domain's SPIFFE ID as its only URI SAN. A leaf has
//! exactly one URI SAN (the workload's SPIFFE ID), `cA=false`, key usage `digitalSignature`,
//! extended key usage `serverAuth` and `clientAuth`, and a random 128-bit serial number.
//!
//! Workload keys never reach the server: the server signs the public key of a CSR whose
//! signature it has verified. Only ECDSA P-256 keys are accepted, because they are what the
//! agent generates.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use zeroize::Zeroizing;

use crate::random::random_bytes;

/// Object identifier of the P-256 curve (secp256r1, prime256v1).
const P256_CURVE_OID: &str = "1.2.840.10045.3.1.7";

/// Largest CSR accepted, in bytes. A P-256 CSR with one URI SAN is a few hundred bytes.
pub const MAX_CSR_BYTES: usize = 8 * 1024;

/// How far a certificate's `notBefore` is set before the time of issue, so that a relying party
/// whose clock is slightly behind accepts it at once.
pub const BACKDATE_SECONDS: i64 = 60;

/// Errors of CA generation, CSR checks and certificate signing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    /// The CSR is larger than [`MAX_CSR_BYTES`].
    #[error("csr is {size} bytes, larger than the maximum of {max}")]
    CsrTooLarge {
        /// Size of the CSR sent.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// The CSR is not DER, its signature does not verify, or it requests an extension that is
    /// not supported.
    #[error("csr is invalid: {0}")]
    InvalidCsr(String),
    /// The CSR's public key is not an ECDSA P-256 key.
    #[error("csr has a public key that is not ECDSA P-256; generate a P-256 key pair")]
    UnsupportedKey,
    /// The CSR requests a URI SAN other than the SPIFFE ID the caller was granted.
    #[error("csr requests URI SAN {requested:?}, but the caller's SPIFFE ID is {granted:?}")]
    SpiffeIdMismatch {
        /// The URI the CSR requests.
        requested: String,
        /// The SPIFFE ID the decision granted.
        granted: String,
    },
    /// A time is outside the range a certificate can carry.
    #[error("time {0} is out of range for a certificate")]
    TimeOutOfRange(i64),
    /// The stored CA certificate or key could not be read, or rcgen failed to sign.
    #[error("x509 CA failure: {0}")]
    Ca(String),
    /// The random number generator failed.
    #[error(transparent)]
    Random(#[from] crate::random::RandomError),
}

/// A newly generated CA: its certificate and its private key as PKCS#8 DER.
pub struct GeneratedCa {
    /// The self-signed CA certificate, DER.
    pub certificate_der: Vec<u8>,
    /// The CA's private key, PKCS#8 DER. Seal it before it is stored.
    pub private_key_pkcs8: Zeroizing<Vec<u8>>,
    /// The certificate's `notAfter`, Unix seconds.
    pub not_after: i64,
}

impl std::fmt::Debug for GeneratedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCa")
            .field("certificate_der", &self.certificate_der.len())
            .field("private_key_pkcs8", &"<redacted>")
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Generates a self-signed ECDSA P-256 CA certificate for `trust_domain`, valid from `now`
/// (less [`BACKDATE_SECONDS`]) for `lifetime_seconds`. `id` goes into the subject's common name,
/// so that operators can tell the CAs of one trust domain apart.
pub fn generate_ca(
    trust_domain: &str,
    id: &str,
    now: i64,
    lifetime_seconds: i64,
) -> Result<GeneratedCa, X509Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|error| X509Error::Ca(error.to_string()))?;
    let not_after = now.saturating_add(lifetime_seconds);

    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name(trust_domain, id);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![uri_san(&format!("spiffe://{trust_domain}"))?];
    params.serial_number = Some(random_serial()?);
    params.not_before = to_time(now.saturating_sub(BACKDATE_SECONDS))?;
    params.not_after = to_time(not_after)?;

    let certificate = params
        .self_signed(&key)
        .map_err(|error| X509Error::Ca(error.to_string()))?;
    Ok(GeneratedCa {
        certificate_der: certificate.der().to_vec(),
        private_key_pkcs8: Zeroizing::new(key.serialize_der()),
        not_after,
    })
}

/// The SPIFFE ID and validity of an X.509-SVID to sign.
#[derive(Debug, Clone)]
pub struct SvidRequest<'a> {
    /// The workload's SPIFFE ID: the only URI SAN.
    pub spiffe_id: &'a str,
    /// Time of issue, Unix seconds; `notBefore` is [`BACKDATE_SECONDS`] earlier.
    pub now: i64,
    /// `notAfter`, Unix seconds. The caller caps it at the CA's own `notAfter`.
    pub not_after: i64,
}

/// An X.509-SVID just signed.
#[derive(Debug, Clone)]
pub struct SignedSvid {
    /// The leaf certificate, DER.
    pub certificate_der: Vec<u8>,
    /// The serial number as lowercase hex, for the audit log.
    pub serial: String,
}

/// Checks a CSR and returns its parsed form: size, DER, signature, a P-256 key and, when
/// `spiffe_id` is given, no SAN other than a URI equal to it.
pub fn verify_csr(
    csr_der: &[u8],
    spiffe_id: Option<&str>,
) -> Result<CertificateSigningRequestParams, X509Error> {
    if csr_der.len() > MAX_CSR_BYTES {
        return Err(X509Error::CsrTooLarge {
            size: csr_der.len(),
            max: MAX_CSR_BYTES,
        });
    }
    let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(
        csr_der,
    )
    .map_err(|error| X509Error::InvalidCsr(format!("not a DER PKCS#10 request: {error}")))?;
    let key_algorithm = &parsed.certification_request_info.subject_pki.algorithm;
    let curve = key_algorithm
        .parameters
        .as_ref()
        .and_then(|parameters| parameters.as_oid().ok());
    if curve.map(|oid| oid.to_id_string()).as_deref() != Some(P256_CURVE_OID) {
        return Err(X509Error::UnsupportedKey);
    }
    if let (Some(spiffe_id), Some(extensions)) = (spiffe_id, parsed.requested_extensions()) {
        for extension in extensions {
            if let ParsedExtension::SubjectAlternativeName(san) = extension {
                for name in &san.general_names {
                    let requested = match name {
                        GeneralName::URI(uri) => (*uri).to_string(),
                        other => format!("{other}"),
                    };
                    if requested != spiffe_id {
                        return Err(X509Error::SpiffeIdMismatch {
                            requested,
                            granted: spiffe_id.to_string(),
                        });
                    }
                }
            }
        }
    }
    // rcgen verifies the signature over the request info with aws-lc-rs.
    CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
        .map_err(|error| X509Error::InvalidCsr(error.to_string()))
}

/// Signs an X.509-SVID for the public key of `csr` (checked by [`verify_csr`]) with the CA
/// `ca_certificate_der` whose PKCS#8 key is `ca_private_key_pkcs8`. Whatever else the CSR
/// requested is ignored: the profile is fixed.
pub fn sign_svid(
    csr: CertificateSigningRequestParams,
    ca_certificate_der: &[u8],
    ca_private_key_pkcs8: &[u8],
    request: &SvidRequest<'_>,
) -> Result<SignedSvid, X509Error> {
    let ca_key = KeyPair::try_from(ca_private_key_pkcs8)
        .map_err(|error| X509Error::Ca(format!("CA key: {error}")))?;
    let issuer = Issuer::from_ca_cert_der(&ca_certificate_der.to_vec().into(), ca_key)
        .map_err(|error| X509Error::Ca(format!("CA certificate: {error}")))?;

    let serial = random_serial()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Mayfly");
    params.subject_alt_names = vec![uri_san(request.spiffe_id)?];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial.clone());
    params.not_before = to_time(request.now.saturating_sub(BACKDATE_SECONDS))?;
    params.not_after = to_time(request.not_after)?;

    let mut csr = csr;
    csr.params = params;
    let certificate = csr
        .signed_by(&issuer)
        .map_err(|error| X509Error::Ca(format!("signing: {error}")))?;
    Ok(SignedSvid {
        certificate_der: certificate.der().to_vec(),
        serial: hex::encode(serial.to_bytes()),
    })
}

/// Returns the JWK of a CA certificate's public key for a SPIFFE bundle: `kty`, `crv`, `x`, `y`,
/// `use: x509-svid` and the certificate in `x5c`.
pub fn bundle_jwk(certificate_der: &[u8]) -> Result<Value, X509Error> {
    let (_, certificate) = X509Certificate::from_der(certificate_der)
        .map_err(|error| X509Error::Ca(format!("CA certificate: {error}")))?;
    let point = certificate.public_key().subject_public_key.data.as_ref();
    // An uncompressed P-256 point: 0x04, then 32 bytes of x and 32 bytes of y.
    if point.len() != 65 || point[0] != 4 {
        return Err(X509Error::UnsupportedKey);
    }
    Ok(json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        "use": "x509-svid",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(certificate_der)],
    }))
}

/// Encodes DER certificates as PEM, one block each.
pub fn certificates_pem(certificates: &[&[u8]]) -> String {
    let mut pem = String::new();
    for der in certificates {
        let encoded = base64::engine::general_purpose::STANDARD.encode(der);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

fn ca_name(trust_domain: &str, id: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Mayfly");
    name.push(
        DnType::CommonName,
        format!("Mayfly X.509 CA {trust_domain} {id}"),
    );
    name
}

fn uri_san(uri: &str) -> Result<SanType, X509Error> {
    let value = uri
        .to_string()
        .try_into()
        .map_err(|_| X509Error::Ca(format!("{uri:?} is not an IA5 string")))?;
    Ok(SanType::URI(value))
}

/// Returns a random positive 128-bit serial number (RFC 5280 allows up to 20 octets).
fn random_serial() -> Result<SerialNumber, X509Error> {
    let mut bytes = *random_bytes::<16>()?;
    // A leading zero bit keeps the DER INTEGER positive without a padding byte, and a set second
    // bit keeps its length fixed at 16 octets.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn to_time(seconds: i64) -> Result<time::OffsetDateTime, X509Error> {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| X509Error::TimeOutOfRange(seconds))
}

#[cfg(test)]
mod tests;
