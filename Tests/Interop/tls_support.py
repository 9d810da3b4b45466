"""A throwaway PKI for the TLS tests, made with the openssl command at test time (no private key is committed):
a CA, a server certificate for 127.0.0.1/localhost, client certificates, and a second CA nobody trusts."""

import os
import subprocess


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _key(name, cwd, password=None):
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key", cwd=cwd)
    if password is not None:
        _openssl("pkcs8", "-topk8", "-in", f"{name}.key", "-out", f"{name}.enc.key", "-v2", "aes-256-cbc",
                 "-passout", f"pass:{password}", cwd=cwd)


def _ca(name, subject, cwd):
    _key(name, cwd)
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", "2", "-subj", subject,
             "-out", f"{name}.pem", cwd=cwd)


def _signed(name, subject, ca, cwd, extensions, password=None):
    _key(name, cwd, password)
    with open(os.path.join(cwd, f"{name}.ext"), "w") as f:
        f.write(extensions)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=cwd)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=cwd)


SERVER_EXTENSIONS = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"


def client_extensions(san=None):
    return "extendedKeyUsage=clientAuth\n" + (f"subjectAltName={san}\n" if san else "")


def make_pki(directory, key_password="s3cret"):
    """Writes ca.pem, server.pem/server.key (and server.enc.key, encrypted with key_password), server2.pem/.key (a
    second server certificate, for reloads), client-guest, client-nobody, client-san (SAN DNS:guest, CN nobody),
    and other-ca with client-other (signed by a CA the broker does not trust). Returns the directory."""
    _ca("ca", "/CN=Warren Test CA", directory)
    _ca("other-ca", "/CN=Untrusted CA", directory)
    _signed("server", "/CN=localhost", "ca", directory, SERVER_EXTENSIONS, password=key_password)
    _signed("server2", "/CN=localhost-reloaded", "ca", directory, SERVER_EXTENSIONS)
    _signed("client-guest", "/CN=guest", "ca", directory, client_extensions())
    _signed("client-nobody", "/CN=nobody", "ca", directory, client_extensions())
    _signed("client-san", "/CN=nobody", "ca", directory, client_extensions("DNS:guest"))
    _signed("client-other", "/CN=guest", "other-ca", directory, client_extensions())
    return directory
