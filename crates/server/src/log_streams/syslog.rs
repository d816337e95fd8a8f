//! The `syslog` destination: RFC 5424 messages with octet-counting framing (RFC 6587) over one
//! long-lived TCP or TLS connection, reconnected after any error.
//!
//! NOTE: syslog over TCP has no application-level acknowledgement, so a message is counted as
//! delivered once the kernel accepted it. Before each batch the connection is checked for a
//! close from the receiver, which catches a restarted receiver, but bytes written just before a
//! receiver crashes can still be lost. Choose a webhook, HEC or NATS stream where that matters.

use std::sync::Arc;

use async_trait::async_trait;
use mayfly_domain::log_stream::{LogStream, SyslogTransport};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::destination::{DeliveryError, Destination, Item};

trait Connection: AsyncWrite + Unpin + Send {}
impl<T: AsyncWrite + Unpin + Send> Connection for T {}

pub struct SyslogDestination {
    address: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The open connection and the TCP stream under it, used to notice a close.
    connection: Option<Box<dyn Connection>>,
    /// A clone of the raw socket, to peek for a close by the receiver.
    probe: Option<std::net::TcpStream>,
}

impl SyslogDestination {
    pub fn new(stream: &LogStream) -> Result<SyslogDestination, DeliveryError> {
        let address = stream.address.clone().ok_or_else(|| {
            DeliveryError::Settings("a syslog log stream needs an address".to_string())
        })?;
        let tls = match stream.transport.unwrap_or_default() {
            SyslogTransport::Tcp => None,
            SyslogTransport::Tls => Some(tls_connector(stream, &address)?),
        };
        Ok(SyslogDestination {
            address,
            tls,
            connection: None,
            probe: None,
        })
    }

    async fn connect(&mut self) -> Result<(), DeliveryError> {
        let io_error = |context: &str, source| DeliveryError::Io {
            context: format!("{context} {}", self.address),
            source,
        };
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|source| io_error("connecting to", source))?;
        tcp.set_nodelay(true)
            .map_err(|source| io_error("configuring the connection to", source))?;
        let probe = tcp
            .into_std()
            .map_err(|source| io_error("configuring the connection to", source))?;
        let tcp = TcpStream::from_std(
            probe
                .try_clone()
                .map_err(|source| io_error("configuring the connection to", source))?,
        )
        .map_err(|source| io_error("configuring the connection to", source))?;

        let connection: Box<dyn Connection> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| io_error("TLS handshake with", source))?,
            ),
        };
        self.connection = Some(connection);
        self.probe = Some(probe);
        Ok(())
    }

    /// Drops the connection when the receiver closed it, so the batch goes over a new one.
    fn drop_if_closed(&mut self) {
        let Some(probe) = &self.probe else {
            return;
        };
        let mut byte = [0u8; 1];
        let closed = match probe.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
        };
        if closed {
            self.connection = None;
            self.probe = None;
        }
    }
}

#[async_trait]
impl Destination for SyslogDestination {
    async fn send(&mut self, items: &[Item]) -> Result<(), DeliveryError> {
        self.drop_if_closed();
        if self.connection.is_none() {
            self.connect().await?;
        }

        let mut buffer = Vec::new();
        for item in items {
            buffer
                .extend_from_slice(mayfly_domain::log_format::octet_counted(&item.line).as_bytes());
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err(DeliveryError::Settings(
                "the syslog connection is not open".to_string(),
            ));
        };
        let written = async {
            connection.write_all(&buffer).await?;
            connection.flush().await
        }
        .await;
        if let Err(source) = written {
            self.connection = None;
            self.probe = None;
            return Err(DeliveryError::Io {
                context: format!("writing to {}", self.address),
                source,
            });
        }
        Ok(())
    }
}

fn tls_connector(
    stream: &LogStream,
    address: &str,
) -> Result<(TlsConnector, ServerName<'static>), DeliveryError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let ca_file = stream.ca_file.clone().unwrap_or_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca_file)
        .and_then(|iter| iter.collect())
        .map_err(|error| {
            DeliveryError::Settings(format!("reading CA certificates from {ca_file}: {error}"))
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|error| {
            DeliveryError::Settings(format!("invalid CA certificate in {ca_file}: {error}"))
        })?;
    }
    if roots.is_empty() {
        return Err(DeliveryError::Settings(format!(
            "{ca_file} contains no CA certificate"
        )));
    }

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| DeliveryError::Settings(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let host = address
        .rsplit_once(':')
        .map(|(host, _)| host)
        .unwrap_or(address);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name_text = stream
        .server_name
        .clone()
        .unwrap_or_else(|| host.to_string());
    let name = ServerName::try_from(name_text.clone()).map_err(|error| {
        DeliveryError::Settings(format!("invalid server_name {name_text:?}: {error}"))
    })?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}
