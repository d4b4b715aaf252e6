//! Cluster credentials: who a node is, and whom it trusts.
//!
//! Every node of a cluster presents a certificate signed by the cluster's root and
//! accepts only peers whose certificate chains to that same root (mutual TLS on
//! every connection). A node of another cluster fails the handshake.
//!
//! - [`Credentials::ephemeral`]: a root generated once per process, and a fresh
//!   node certificate signed by it: zero configuration for nodes in one process.
//! - [`Credentials::create_cluster`] writes a root (`ca.pem`, `ca.key`) to a
//!   directory; [`Credentials::from_dir`] then either loads a node's own
//!   `node.pem`/`node.key` from it or, where the root's key is present, issues one:
//!   nodes of one machine share a cluster through a directory.
//!
//! A node certificate names the node in its Common Name (the `_named` variants;
//! `remora-node` otherwise): that name is the identity the node's calls carry to
//! their handlers ([`Caller::identity`](crate::Caller::identity)), and the root
//! vouches for it. Every node certificate also carries the DNS name `remora-node`,
//! the server name every node verifies when it dials.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::id::NodeId;

/// The DNS name every node certificate carries, and every client verifies (TLS
/// proves cluster membership); also the Common Name, and so the identity, of a
/// node without a name of its own.
pub(crate) const NODE_NAME: &str = "remora-node";

/// Why credentials could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The directory has no node certificate and no root key to issue one with.
    #[error("{dir}: no node.pem/node.key and no ca.key to issue them; create a cluster with `remora cert` (or Credentials::create_cluster)")]
    Incomplete {
        /// The directory.
        dir: PathBuf,
    },
    /// Generating a key or certificate failed.
    #[error("cannot generate credentials: {0}")]
    Generate(String),
}

/// A node's certificate chain and key, and the cluster root it trusts.
#[derive(Clone)]
pub struct Credentials {
    pub(crate) root: CertificateDer<'static>,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: Arc<PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// A cluster root: its certificate and the key that signs node certificates.
struct Root {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Root {
    fn generate() -> Result<Root, CredentialsError> {
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "remora cluster root");
        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(Root { cert, key })
    }

    fn load(cert_pem: &str, key_pem: &str) -> Result<Root, CredentialsError> {
        let key = KeyPair::from_pem(key_pem).map_err(generate)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem).map_err(generate)?;
        // Re-signing with the same key and parameters yields an equivalent root: the
        // same subject and key, which is what chain verification looks at.
        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(Root { cert, key })
    }

    /// A node certificate for `name` (its Common Name), valid for the server name
    /// every node dials.
    fn issue(&self, name: &str) -> Result<(rcgen::Certificate, KeyPair), CredentialsError> {
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::new(vec![NODE_NAME.to_owned()]).map_err(generate)?;
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(generate)?;
        Ok((cert, key))
    }

    fn credentials(&self, name: &str) -> Result<Credentials, CredentialsError> {
        let (cert, key) = self.issue(name)?;
        Ok(Credentials {
            root: self.cert.der().clone(),
            chain: vec![cert.der().clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            ))),
        })
    }
}

fn generate(err: impl std::fmt::Display) -> CredentialsError {
    CredentialsError::Generate(err.to_string())
}

fn read(path: &Path) -> Result<String, CredentialsError> {
    std::fs::read_to_string(path).map_err(|source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str) -> Result<(), CredentialsError> {
    std::fs::write(path, contents).map_err(|source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    })
}

impl Credentials {
    /// The id a node using these credentials announces in `incarnation`: bound to
    /// the node certificate, so that a peer completing TLS with another
    /// certificate cannot claim it (see [`NodeId`]).
    ///
    /// ```
    /// let credentials = remora::Credentials::ephemeral()?;
    /// assert_eq!(credentials.node_id(7), credentials.node_id(7));
    /// assert_ne!(credentials.node_id(7), credentials.node_id(8));
    /// assert_ne!(credentials.node_id(7), remora::Credentials::ephemeral()?.node_id(7));
    /// # Ok::<(), remora::CredentialsError>(())
    /// ```
    pub fn node_id(&self, incarnation: u64) -> NodeId {
        NodeId::bound_to(self.leaf(), incarnation)
    }

    /// The keys of the node's QUIC endpoint that must outlive its process,
    /// derived from its private key: the stateless-reset key, and the key that
    /// signs its connection ids. A node restarted with the same private key (a
    /// `node.key` kept on disk) recognises the connection ids of its earlier
    /// process's connections and answers their packets with resets those
    /// connections accept, so its peers learn of the restart within a
    /// keep-alive instead of a peer timeout. Nobody without the private key can
    /// forge either.
    pub(crate) fn restart_keys(&self) -> (ring::hmac::Key, u64) {
        let derive = |label: &[u8]| {
            let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
            hash.update(label);
            hash.update(self.key.secret_der());
            hash.finish()
        };
        let reset = derive(b"remora stateless reset\0");
        let cids = derive(b"remora connection ids\0");
        let mut cid_key = [0; 8];
        cid_key.copy_from_slice(&cids.as_ref()[..8]);
        (
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset.as_ref()),
            u64::from_le_bytes(cid_key),
        )
    }

    /// The node's own certificate (DER).
    fn leaf(&self) -> &[u8] {
        self.chain.first().map_or(&[], |leaf| leaf.as_ref())
    }

    /// Credentials under this process's ephemeral cluster root (made on first use):
    /// every node of the process that uses them trusts every other, and nothing else.
    /// The certificate's Common Name is `remora-node`; see
    /// [`Credentials::ephemeral_named`].
    pub fn ephemeral() -> Result<Credentials, CredentialsError> {
        Credentials::ephemeral_named(NODE_NAME)
    }

    /// [`Credentials::ephemeral`] for a node called `name`: the certificate's Common
    /// Name, which peers see as the identity of this node's calls
    /// ([`Caller::identity`](crate::Caller::identity)). A node built with a name and
    /// no credentials uses these.
    pub fn ephemeral_named(name: &str) -> Result<Credentials, CredentialsError> {
        static ROOT: OnceLock<Result<Root, String>> = OnceLock::new();
        let root = ROOT
            .get_or_init(|| Root::generate().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| CredentialsError::Generate(e.clone()))?;
        root.credentials(name)
    }

    /// Writes a new cluster root (`ca.pem`, `ca.key`) into `dir`, creating it.
    /// Keep `ca.key` secret: whoever holds it can add nodes to the cluster.
    pub fn create_cluster(dir: impl AsRef<Path>) -> Result<(), CredentialsError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| CredentialsError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let root = Root::generate()?;
        write(&dir.join("ca.pem"), &root.cert.pem())?;
        write(&dir.join("ca.key"), &root.key.serialize_pem())?;
        Ok(())
    }

    /// Writes a node certificate and key (`node.pem`, `node.key`) signed by the
    /// cluster root in `ca_dir` into `out_dir`. Its Common Name is `remora-node`; see
    /// [`Credentials::issue_named_node`].
    pub fn issue_node(
        ca_dir: impl AsRef<Path>,
        out_dir: impl AsRef<Path>,
    ) -> Result<(), CredentialsError> {
        Credentials::issue_named_node(ca_dir, out_dir, NODE_NAME)
    }

    /// [`Credentials::issue_node`] for a node called `name`: the certificate's Common
    /// Name, which peers see as the identity of the node's calls
    /// ([`Caller::identity`](crate::Caller::identity)). Whoever holds the root's key
    /// decides which names exist.
    pub fn issue_named_node(
        ca_dir: impl AsRef<Path>,
        out_dir: impl AsRef<Path>,
        name: &str,
    ) -> Result<(), CredentialsError> {
        let ca_dir = ca_dir.as_ref();
        let out_dir = out_dir.as_ref();
        let root = Root::load(
            &read(&ca_dir.join("ca.pem"))?,
            &read(&ca_dir.join("ca.key"))?,
        )?;
        let (cert, key) = root.issue(name)?;
        std::fs::create_dir_all(out_dir).map_err(|source| CredentialsError::Io {
            path: out_dir.to_owned(),
            source,
        })?;
        write(&out_dir.join("node.pem"), &cert.pem())?;
        write(&out_dir.join("node.key"), &key.serialize_pem())?;
        if out_dir != ca_dir {
            write(&out_dir.join("ca.pem"), &read(&ca_dir.join("ca.pem"))?)?;
        }
        Ok(())
    }

    /// Loads credentials from `dir`: the root `ca.pem`, and the node's `node.pem` and
    /// `node.key`; where those are missing but the root's `ca.key` is there, a fresh
    /// node certificate is issued in memory (nodes sharing one directory), with the
    /// Common Name `remora-node`; see [`Credentials::from_dir_named`].
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Credentials, CredentialsError> {
        Credentials::from_dir_named(dir, NODE_NAME)
    }

    /// [`Credentials::from_dir`] for a node called `name`: a certificate issued in
    /// memory gets `name` as its Common Name. A `node.pem` found in `dir` is used as
    /// it is: its name is the one it was issued with.
    pub fn from_dir_named(
        dir: impl AsRef<Path>,
        name: &str,
    ) -> Result<Credentials, CredentialsError> {
        let dir = dir.as_ref();
        let ca_path = dir.join("ca.pem");
        let root = CertificateDer::from_pem_file(&ca_path).map_err(|e| CredentialsError::Pem {
            path: ca_path.clone(),
            reason: e.to_string(),
        })?;
        let (node_pem, node_key) = (dir.join("node.pem"), dir.join("node.key"));
        if node_pem.exists() && node_key.exists() {
            let chain = CertificateDer::pem_file_iter(&node_pem)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| CredentialsError::Pem {
                    path: node_pem.clone(),
                    reason: e.to_string(),
                })?;
            let key =
                PrivateKeyDer::from_pem_file(&node_key).map_err(|e| CredentialsError::Pem {
                    path: node_key.clone(),
                    reason: e.to_string(),
                })?;
            return Ok(Credentials {
                root,
                chain,
                key: Arc::new(key),
            });
        }
        let ca_key = dir.join("ca.key");
        if !ca_key.exists() {
            return Err(CredentialsError::Incomplete {
                dir: dir.to_owned(),
            });
        }
        let signer = Root::load(&read(&ca_path)?, &read(&ca_key)?)?;
        let mut credentials = signer.credentials(name)?;
        // Trust the root exactly as written in ca.pem.
        credentials.root = root;
        Ok(credentials)
    }
}

/// The Common Name of a DER certificate: `None` if it has none, or none that reads
/// as a string, or does not parse. (The first, if there are several.)
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_name(credentials: &Credentials) -> Option<String> {
        common_name(credentials.chain.first().expect("a node certificate"))
    }

    #[test]
    fn node_certificates_carry_the_node_name_and_the_common_server_name() {
        let named = Credentials::ephemeral_named("alpha").unwrap();
        assert_eq!(leaf_name(&named).as_deref(), Some("alpha"));
        assert_eq!(
            leaf_name(&Credentials::ephemeral().unwrap()).as_deref(),
            Some(NODE_NAME)
        );
        let (_, cert) = x509_parser::parse_x509_certificate(&named.chain[0]).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![x509_parser::extensions::GeneralName::DNSName(NODE_NAME)]
        );
    }

    #[test]
    fn a_certificate_without_a_common_name_has_none() {
        let root = Root::generate().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![NODE_NAME.to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.signed_by(&key, &root.cert, &root.key).unwrap();
        assert_eq!(common_name(cert.der()), None);
        assert_eq!(common_name(b"not a certificate"), None);
    }

    #[test]
    fn named_certificates_issued_from_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        Credentials::create_cluster(dir).unwrap();
        // Issued in memory from ca.key.
        let shared = Credentials::from_dir_named(dir, "beta").unwrap();
        assert_eq!(leaf_name(&shared).as_deref(), Some("beta"));
        assert_eq!(
            leaf_name(&Credentials::from_dir(dir).unwrap()).as_deref(),
            Some(NODE_NAME)
        );
        // Written to node.pem: loaded as issued, whatever name the loader asks for.
        let out = dir.join("gamma");
        Credentials::issue_named_node(dir, &out, "gamma").unwrap();
        let loaded = Credentials::from_dir_named(&out, "other").unwrap();
        assert_eq!(leaf_name(&loaded).as_deref(), Some("gamma"));
    }
}
