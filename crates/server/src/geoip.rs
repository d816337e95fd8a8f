//! Location of source addresses, read from a MaxMind-format database (GeoIP2 or GeoLite2, in the
//! City or Country layout) that the operator provides with the `geoip_database` setting.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{MaxMindDbError, Reader, geoip2};
use mayfly_domain::conditions::{Location, canonical_ip};

/// Why the GeoIP database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    /// The file is missing, unreadable or not a MaxMind DB file.
    #[error("cannot open geoip_database {path}: {source}")]
    Open {
        path: PathBuf,
        source: MaxMindDbError,
    },
}

/// A GeoIP database loaded into memory at start.
pub struct GeoIp {
    reader: Reader<Vec<u8>>,
    path: PathBuf,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoIp")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

impl GeoIp {
    /// Reads the whole database file and checks its metadata.
    pub fn open(path: &Path) -> Result<GeoIp, GeoIpError> {
        let reader = Reader::open_readfile(path).map_err(|source| GeoIpError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(GeoIp {
            reader,
            path: path.to_path_buf(),
        })
    }

    /// Looks up the country and subdivisions of `address`. Returns `None` when the database has
    /// no country for it or its record cannot be decoded (logged), so callers fail closed.
    pub fn locate(&self, address: IpAddr) -> Option<Location> {
        let address = canonical_ip(address);
        // An IPv4-only database has no IPv6 entries, and the reader reports such a lookup as an
        // error, which would log a warning for every IPv6 caller.
        if address.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return None;
        }
        let record = match self
            .reader
            .lookup(address)
            .and_then(|result| result.decode::<geoip2::City>())
        {
            Ok(record) => record?,
            Err(error) => {
                tracing::warn!(%address, path = %self.path.display(), error = %error, "geoip lookup failed");
                return None;
            }
        };
        let country = record.country.iso_code?.to_ascii_uppercase();
        let subdivisions = record
            .subdivisions
            .iter()
            .filter_map(|subdivision| subdivision.iso_code)
            .map(|code| format!("{country}-{}", code.to_ascii_uppercase()))
            .collect();
        Some(Location {
            country: Some(country),
            subdivisions,
        })
    }
}
