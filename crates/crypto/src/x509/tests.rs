//! The SPIFFE X.509-SVID profile checked on minted certificates, parsed with x509-parser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    SanType,
};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use super::*;

const NOW: i64 = 1_800_000_000;
const TRUST_DOMAIN: &str = "prod.example.com";
const SPIFFE_ID: &str = "spiffe://prod.example.com/billing";

fn csr_for(key: &KeyPair, sans: Vec<SanType>) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.serialize_request(key).unwrap().der().to_vec()
}

fn p256_csr() -> Vec<u8> {
    csr_for(
        &KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        Vec::new(),
    )
}

fn issue(ca: &GeneratedCa, csr: &[u8]) -> SignedSvid {
    let checked = verify_csr(csr, Some(SPIFFE_ID)).unwrap();
    let request = SvidRequest {
        spiffe_id: SPIFFE_ID,
        now: NOW,
        not_after: NOW + 3600,
    };
    sign_svid(
        checked,
        &ca.certificate_der,
        &ca.private_key_pkcs8,
        &request,
    )
    .unwrap()
}

fn uris(certificate: &X509Certificate<'_>) -> Vec<String> {
    let san = certificate
        .subject_alternative_name()
        .unwrap()
        .expect("a SAN extension");
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => (*uri).to_string(),
            other => panic!("unexpected SAN {other}"),
        })
        .collect()
}

#[test]
fn ca_certificate_profile() {
    let ca = generate_ca(TRUST_DOMAIN, "ca1", NOW, 30 * 86_400).unwrap();
    let (_, certificate) = X509Certificate::from_der(&ca.certificate_der).unwrap();

    let constraints = certificate
        .basic_constraints()
        .unwrap()
        .expect("basic constraints");
    assert!(constraints.critical);
    assert!(constraints.value.ca);
    let usage = certificate.key_usage().unwrap().expect("key usage").value;
    assert!(usage.key_cert_sign());
    assert!(usage.crl_sign());
    assert_eq!(
        uris(&certificate),
        vec!["spiffe://prod.example.com".to_string()]
    );
    assert_eq!(
        certificate.validity().not_after.timestamp(),
        NOW + 30 * 86_400
    );
    assert_eq!(
        certificate.validity().not_before.timestamp(),
        NOW - BACKDATE_SECONDS
    );
    assert_eq!(ca.not_after, NOW + 30 * 86_400);
    assert!(
        certificate.verify_signature(None).is_ok(),
        "the CA is self-signed"
    );
}

#[test]
fn leaf_has_exactly_one_spiffe_uri() {
    let ca = generate_ca(TRUST_DOMAIN, "ca1", NOW, 86_400).unwrap();
    let leaf = issue(&ca, &p256_csr());
    let (_, certificate) = X509Certificate::from_der(&leaf.certificate_der).unwrap();

    assert_eq!(uris(&certificate), vec![SPIFFE_ID.to_string()]);
}

#[test]
fn leaf_is_not_a_ca() {
    let ca = generate_ca(TRUST_DOMAIN, "ca1", NOW, 86_400).unwrap();
    let leaf = issue(&ca, &p256_csr());
    let (_, certificate) = X509Certificate::from_der(&leaf.certificate_der).unwrap();

    let constraints = certificate
        .basic_constraints()
        .unwrap()
        .expect("basic constraints");
    assert!(!constraints.value.ca);
    assert!(constraints.value.path_len_constraint.is_none());
}

#[test]
fn leaf_key_usages() {
    let ca = generate_ca(TRUST_DOMAIN, "ca1", NOW, 86_400).unwrap();
    let leaf = issue(&ca, &p256_csr());
    let (_, certificate) = X509Certificate::from_der(&leaf.certificate_der).unwrap();

    let usage = certificate.key_usage().unwrap().expect("key usage");
    assert!(usage.critical);
    assert!(usage.value.digital_signature());
    assert!(!usage.value.key_cert_sign());
    assert!(!usage.value.crl_sign());
    let extended = certificate
        .extended_key_usage()
        .unwrap()
        .expect("extended key usage")
        .value;
    assert!(extended.server_auth);
    assert!(extended.client_auth);
    assert!(!extended.any);
}

#[test]
fn leaf_chains_to_its_ca() {
    let ca = generate_ca(TRUST_DOMAIN, "ca1", NOW, 86_400).unwrap();
    let leaf = issue(&ca, &p256_csr());
    let (_, certificate) = X509Certificate::from_der(&leaf.certificate_der).unwrap();
    let (_, authority) = X509Certificate::from_der(&ca.certificate_der).unwrap();

    assert_eq!(certificate.issuer(), authority.subject());
    assert!(
        certificate
            .verify_signature(Some(authority.public_key()))
            .is_ok()
    );
    let key_id = certificate
        .extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.clone(),
            _ => None,
        })
        .expect("authority key identifier");
    let subject_key_id = authority
        .extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.clone()),
            _ => None,
        })
        .expect("subject key identifier");
    assert_eq!(key_id.0, subject_key_id.0);
    assert_eq!(certificate.validity().not_after.timestamp(), NOW + 3600);
}

#[test]
fn leaf_serials_are_random_and_positive() {
    let ca = generate_ca(TRUST_DOMAIN, "ca1", NOW, 86_400).unwrap();
    let first = issue(&ca, &p256_csr());
    let second = issue(&ca, &p256_csr());
    let (_, certificate) = X509Certificate::from_der(&first.certificate_der).unwrap();

    assert_ne!(first.serial, second.serial);
    assert_eq!(certificate.raw_serial().len(), 16);
    assert_eq!(
        certificate.raw_serial()[0] & 0x80,
        0,
        "the serial is positive"
    );
    assert_eq!(hex::encode(certificate.raw_serial()), first.serial);
}

#[test]
fn leaf_carries_the_csr_public_key() {
    let ca = generate_ca(TRUST_DOMAIN, "ca1", NOW, 86_400).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = issue(&ca, &csr_for(&key, Vec::new()));
    let (_, certificate) = X509Certificate::from_der(&leaf.certificate_der).unwrap();

    assert_eq!(
        certificate.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
}

#[test]
fn csr_with_forged_signature_rejected() {
    let mut csr = p256_csr();
    let last = csr.len() - 1;
    csr[last] ^= 0x01;

    let error = verify_csr(&csr, Some(SPIFFE_ID)).unwrap_err();
    assert!(matches!(error, X509Error::InvalidCsr(_)), "{error}");
}

#[test]
fn csr_for_another_spiffe_id_rejected() {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let other = SanType::URI(
        "spiffe://prod.example.com/admin"
            .to_string()
            .try_into()
            .unwrap(),
    );
    let csr = csr_for(&key, vec![other]);

    let error = verify_csr(&csr, Some(SPIFFE_ID)).unwrap_err();
    assert_eq!(
        error,
        X509Error::SpiffeIdMismatch {
            requested: "spiffe://prod.example.com/admin".to_string(),
            granted: SPIFFE_ID.to_string()
        }
    );
}

#[test]
fn csr_naming_the_granted_id_accepted() {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let own = SanType::URI(SPIFFE_ID.to_string().try_into().unwrap());

    assert!(verify_csr(&csr_for(&key, vec![own]), Some(SPIFFE_ID)).is_ok());
}

#[test]
fn csr_with_p384_key_rejected() {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();

    assert_eq!(
        verify_csr(&csr_for(&key, Vec::new()), Some(SPIFFE_ID)).unwrap_err(),
        X509Error::UnsupportedKey
    );
}

#[test]
fn csr_garbage_and_oversize_rejected() {
    assert!(matches!(
        verify_csr(b"not a csr", None),
        Err(X509Error::InvalidCsr(_))
    ));
    assert!(matches!(
        verify_csr(&[], None),
        Err(X509Error::InvalidCsr(_))
    ));
    let huge = vec![0_u8; MAX_CSR_BYTES + 1];
    assert_eq!(
        verify_csr(&huge, None).unwrap_err(),
        X509Error::CsrTooLarge {
            size: MAX_CSR_BYTES + 1,
            max: MAX_CSR_BYTES
        }
    );
}

#[test]
fn bundle_jwk_has_x5c_and_coordinates() {
    let ca = generate_ca(TRUST_DOMAIN, "ca1", NOW, 86_400).unwrap();
    let jwk = bundle_jwk(&ca.certificate_der).unwrap();

    assert_eq!(jwk["use"], "x509-svid");
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(jwk["y"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    let x5c = jwk["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    let der = base64::engine::general_purpose::STANDARD
        .decode(x5c[0].as_str().unwrap())
        .unwrap();
    assert_eq!(der, ca.certificate_der);
}

#[test]
fn pem_wraps_each_certificate() {
    let pem = certificates_pem(&[&[1, 2, 3], &[4, 5]]);

    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n"));
}
