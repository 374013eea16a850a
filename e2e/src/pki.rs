//! Test certificates made with the `openssl` CLI: CAs, server certificates
//! naming a DNS name or address, client certificates, and already-expired
//! ones, as PEM files in one directory. Shared by the TLS and mTLS tests of
//! the ingester (e2e/tests/security.rs) and of the operator's driver
//! (operator/tests/pods). Test support only: it panics on any failure.

use std::path::{Path, PathBuf};

/// A directory of `<name>.pem` / `<name>.key` pairs.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// An empty PKI in `dir` (created if missing).
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("pki dir");
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read PEM")
    }

    /// `<name>.pem`/`.key`: a self-signed CA.
    pub fn ca(&self, name: &str) {
        self.new_key(
            name,
            name,
            &["-x509", "-out", &format!("{name}.pem"), "-days", "30"],
        );
    }

    /// `<name>.pem`/`.key`: a server certificate signed by `ca` whose
    /// subjectAltName is `san` (e.g. `DNS:localhost,IP:127.0.0.1`).
    pub fn server(&self, name: &str, ca: &str, san: &str) {
        self.leaf(name, ca, name, "30", &server_ext(san));
    }

    /// As [`Self::server`], but already expired.
    pub fn expired_server(&self, name: &str, ca: &str, san: &str) {
        self.leaf(name, ca, name, "-1", &server_ext(san));
    }

    /// `<name>.pem`/`.key`: a client certificate for `cn` signed by `ca`.
    pub fn client(&self, name: &str, ca: &str, cn: &str) {
        self.leaf(name, ca, cn, "30", CLIENT_EXT);
    }

    /// As [`Self::client`], but already expired.
    pub fn expired_client(&self, name: &str, ca: &str, cn: &str) {
        self.leaf(name, ca, cn, "-1", CLIENT_EXT);
    }

    /// `days` -1 makes it already expired.
    fn leaf(&self, name: &str, ca: &str, cn: &str, days: &str, ext: &str) {
        std::fs::write(
            self.path(&format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{ext}"),
        )
        .expect("ext");
        self.new_key(name, cn, &["-out", &format!("{name}.csr")]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            days,
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    /// `openssl req` with a new P-256 key in `<name>.key` for subject
    /// `/CN={cn}`, plus `extra` (what to write: a self-signed certificate
    /// or a signing request).
    fn new_key(&self, name: &str, cn: &str, extra: &[&str]) {
        let key = format!("{name}.key");
        let subj = format!("/CN={cn}");
        let mut args = vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-subj",
            &subj,
        ];
        args.extend_from_slice(extra);
        self.openssl(&args);
    }

    fn openssl(&self, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl (needed by the TLS tests)");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const CLIENT_EXT: &str = "extendedKeyUsage=clientAuth\n";

fn server_ext(san: &str) -> String {
    format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
}
