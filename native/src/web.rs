//! `hearth web`: serves the built web page (trunk's dist/) and a folder of models to a
//! classroom. Browsers give WebGPU only to secure contexts: http on localhost is one, http on
//! a LAN address is not, so `--https` serves the LAN with a self-signed certificate that is
//! made once, kept, and whose fingerprint is printed for students to compare before they
//! accept it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tower_http::services::ServeDir;

#[derive(Args)]
#[command(after_help = "Examples:
  hearth web                                  # this computer only: http://127.0.0.1:8000/
  hearth web --https --models ~/models        # the classroom: https://<this computer's LAN address>:8443/

Build the page first with `trunk build --release` (README, \"Web\"). A models folder holds HF
model folders (config.json, *.safetensors, tokenizer.json) and .gguf files; the page lists
them (models/index.json) and loads one with a click.")]
pub struct WebArgs {
    /// The built page: trunk's output folder.
    #[arg(long, default_value = "dist")]
    pub dist: PathBuf,
    /// A folder of models, served under models/ (default: DIST/models when it exists).
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Serve over https with a self-signed certificate, on every network interface unless
    /// --host says otherwise: browsers give WebGPU to http pages only on localhost.
    #[arg(long)]
    pub https: bool,
    /// The address to listen on (default: 127.0.0.1, or 0.0.0.0 with --https).
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// The port (default: 8000, or 8443 with --https; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Where the certificate and its key are kept, so that its fingerprint stays the same
    /// from one lesson to the next (default: ~/.cache/hearth/web-tls).
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// Another name the certificate is valid for (a host name students type); may be given
    /// several times. localhost and this computer's addresses are always in it.
    #[arg(long = "cert-name", value_name = "NAME")]
    pub cert_names: Vec<String>,
}

pub fn run(a: WebArgs) -> Result<()> {
    if !a.dist.join("index.html").is_file() {
        bail!("{} has no index.html: build the page first with `trunk build --release` (README, \"Web\"), or point --dist at the built folder", a.dist.display());
    }
    let models = match &a.models {
        Some(m) if !m.is_dir() => bail!("--models {}: not a folder", m.display()),
        Some(m) => Some(m.clone()),
        None => Some(a.dist.join("models")).filter(|m| m.is_dir()),
    };
    let host = a.host.unwrap_or(if a.https { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) });
    let port = a.port.unwrap_or(if a.https { 8443 } else { 8000 });
    let app = router(&a.dist, models.clone());
    if let Some(m) = &models {
        let n = list_models(m)?.len();
        eprintln!("models: {} ({n} model{})", m.display(), if n == 1 { "" } else { "s" });
    }
    let cert = a.https.then(|| certificate(&a)).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(host, port);
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (is another server using the port? pick another with --port)"))?;
        let addr = listener.local_addr()?;
        let scheme = if cert.is_some() { "https" } else { "http" };
        for url in urls(scheme, addr) {
            println!("serving the page on {url}");
        }
        match &cert {
            Some(c) => {
                println!("certificate SHA-256 fingerprint: {}", c.fingerprint);
                println!("students: open the address, check that the browser shows this fingerprint for the certificate, then accept it once");
            }
            None if !host.is_loopback() => {
                println!("note: over plain http only this computer's own browser gets WebGPU (others are not a secure context): use --https for the classroom");
            }
            None => {}
        }
        println!("Ctrl-C stops");
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match cert {
            Some(c) => axum::serve(TlsListener::new(listener, c.server_config()?), app).with_graceful_shutdown(stop).await,
            None => axum::serve(listener, app).with_graceful_shutdown(stop).await,
        }
        .context("the web server failed")
    })
}

/// Accepts TLS connections for axum: each handshake runs in a task of its own (a client that
/// stalls holds up no one) and the finished ones queue up for axum.
struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        let local = tcp.local_addr().expect("bound");
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    // out of file descriptors and the like: wait, as axum's own listener does
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    // a failed or stalled handshake (say, a browser that has not accepted the
                    // certificate yet) just drops the connection
                    if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        TlsListener { local, ready }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

fn router(dist: &Path, models: Option<PathBuf>) -> Router {
    let mut app = Router::new();
    if let Some(m) = models {
        let index = m.clone();
        app = app
            .route("/models/index.json", get(move || async move { Json(list_models(&index).unwrap_or_else(|_| Vec::new())) }))
            .nest_service("/models", ServeDir::new(m));
    }
    app.fallback_service(ServeDir::new(dist))
}

/// The models in `dir`, as the page's list shows them: each HF folder (with config.json) and
/// each .gguf file, with its size in bytes, sorted by name.
fn list_models(dir: &Path) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if path.join("config.json").is_file() {
            let bytes: u64 = std::fs::read_dir(&path)?.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum();
            out.push(json!({ "name": name, "path": format!("models/{name}/"), "bytes": bytes }));
        } else if name.to_lowercase().ends_with(".gguf") && path.is_file() {
            out.push(json!({ "name": name, "path": format!("models/{name}"), "bytes": path.metadata()?.len() }));
        }
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(out)
}

/// The addresses students can open: for a wildcard host, localhost and this computer's LAN
/// address.
fn urls(scheme: &str, addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    if !addr.ip().is_unspecified() {
        return vec![format!("{scheme}://{}/", SocketAddr::new(addr.ip(), port))];
    }
    let mut out = vec![format!("{scheme}://localhost:{port}/")];
    if let Some(ip) = lan_address() {
        out.push(format!("{scheme}://{ip}:{port}/"));
    }
    out
}

/// This computer's address on its local network: the source address the OS picks for an
/// outside destination (nothing is sent).
fn lan_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// The kept certificate (or a new one) and its key.
struct Certificate {
    dir: PathBuf,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// SHA-256 of the certificate, as browsers show it: colon-separated hex.
    fingerprint: String,
}

fn certificate(a: &WebArgs) -> Result<Certificate> {
    let dir = match &a.cert_dir {
        Some(d) => d.clone(),
        None => std::env::home_dir().context("no home folder for the certificate: give --cert-dir")?.join(".cache/hearth/web-tls"),
    };
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert_path.is_file() || !key_path.is_file() {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(lan_address().map(|ip| ip.to_string()));
        names.extend(a.cert_names.iter().cloned());
        let cert = rcgen::generate_simple_self_signed(names.clone()).context("cannot make a certificate")?;
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_private(&key_path, cert.signing_key.serialize_pem().as_bytes())?;
        write_private(&cert_path, cert.cert.pem().as_bytes())?;
        eprintln!("made a self-signed certificate for {} in {}", names.join(", "), dir.display());
    } else if !a.cert_names.is_empty() {
        eprintln!("keeping the certificate in {} (delete it to make one with the new --cert-name)", dir.display());
    }
    let cert_pem = std::fs::read(&cert_path).with_context(|| format!("cannot read {}", cert_path.display()))?;
    let key_pem = std::fs::read(&key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
    let der = first_certificate(&cert_pem).with_context(|| format!("{}: not a PEM certificate", cert_path.display()))?;
    let fingerprint = Sha256::digest(&der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    Ok(Certificate { dir, cert_pem, key_pem, fingerprint })
}

impl Certificate {
    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = || format!("{}: not a certificate and its key (delete the folder to make new ones)", self.dir.display());
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem).collect::<Result<Vec<_>, _>>().with_context(bad)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).with_context(bad)?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .with_context(bad)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The DER bytes of the first certificate in a PEM file.
fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).next()?.ok().map(|c| c.to_vec())
}

/// Writes a file only its owner can read (the key), atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
