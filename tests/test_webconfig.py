from __future__ import annotations

import ssl
from pathlib import Path

import bcrypt
import pytest
from cryptography.hazmat.primitives import serialization

from exporter.schema import ConfigError
from exporter.web.webconfig import LiveWebConfig, WebConfig, build_web_config, load_web_config
from tests.certs import Pki, make_pki

HASH = bcrypt.hashpw(b"scrape-pass", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def problems(document: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_web_config(document)
    return [str(p) for p in caught.value.problems]


def test_empty_file_means_plain_http(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("")
    config = load_web_config(path)
    assert config.ssl_context is None and config.scheme == "http"
    assert not config.basic_auth_users


def test_full_config(pki: Pki) -> None:
    config = build_web_config({
        "tls_server_config": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                              "client_ca_file": str(pki.ca),
                              "client_auth_type": "RequireAndVerifyClientCert",
                              "min_version": "TLS13"},
        "basic_auth_users": {"prometheus": HASH},
        "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
    })
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert config.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert config.basic_auth_users == {"prometheus": HASH.encode()}
    assert config.headers == {"X-Content-Type-Options": "nosniff"}
    assert HASH not in repr(config)


def test_default_minimum_is_tls12(pki: Pki) -> None:
    config = build_web_config({"tls_server_config": {"cert_file": str(pki.server_cert),
                                                     "key_file": str(pki.server_key)}})
    assert config.ssl_context is not None
    assert config.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert config.ssl_context.verify_mode == ssl.CERT_NONE


def test_unknown_and_unsupported_keys_are_errors(pki: Pki) -> None:
    found = problems({
        "tls_server_config": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                              "cipher_suites": ["TLS_AES_128_GCM_SHA256"],
                              "client_auth_type": "RequireAnyClientCert"},
        "basic_auth_users": {"alice": "plaintext-password"},
        "http_server_config": {"headers": {"Server": "x"}, "http2": True},
        "tls_config": {},
    })
    assert any(p.startswith("tls_config: unknown key") for p in found)
    assert any(p.startswith("tls_server_config.cipher_suites: not supported") for p in found)
    assert any(p.startswith("tls_server_config.client_auth_type: expected one of NoClientCert")
               for p in found)
    assert any(p.startswith("basic_auth_users.alice: expected a bcrypt hash") for p in found)
    assert any(p.startswith("http_server_config.headers.Server: header not allowed")
               for p in found)
    assert any(p.startswith("http_server_config.http2: not supported") for p in found)
    assert not any("plaintext-password" in p for p in found)


def test_files_that_do_not_load(pki: Pki, tmp_path: Path) -> None:
    assert problems({"tls_server_config": {"cert_file": str(tmp_path / "none.pem"),
                                           "key_file": str(pki.server_key)}})[0].startswith(
        "tls_server_config.cert_file: cannot read ")
    assert problems({"tls_server_config": {
        "cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
        "client_auth_type": "RequireAndVerifyClientCert"}}) == [
        "tls_server_config.client_ca_file: required when client_auth_type is "
        "RequireAndVerifyClientCert"]


# --- reload ------------------------------------------------------------------------------------

def tls_config(pki: Pki, **extra: str) -> WebConfig:
    return build_web_config({"tls_server_config": {
        "cert_file": str(pki.server_cert), "key_file": str(pki.server_key), **extra}})


def test_a_reload_cannot_turn_tls_on_or_off(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="TLS cannot be turned on by a reload"):
        LiveWebConfig(WebConfig()).check(tls_config(pki))
    live = LiveWebConfig(tls_config(pki))
    with pytest.raises(ConfigError, match="TLS cannot be turned off by a reload"):
        live.replace(WebConfig())
    assert live.current.ssl_context is not None


def test_a_reload_copies_client_auth_and_versions_onto_the_listening_context(
        pki: Pki) -> None:
    first = tls_config(pki)
    live = LiveWebConfig(first)
    listening = first.ssl_context
    assert listening is not None and listening.sni_callback is not None
    second = tls_config(pki, client_ca_file=str(pki.ca), min_version="TLS13",
                        client_auth_type="RequireAndVerifyClientCert")
    live.replace(second)
    assert live.current is second
    assert listening.verify_mode == ssl.CERT_REQUIRED
    assert listening.minimum_version == ssl.TLSVersion.TLSv1_3


def test_a_problem_of_form_hides_no_file_that_does_not_load(tmp_path: Path) -> None:
    """A basic auth user's malformed hash hid that the certificate named does not exist:
    the file was refused for the hash alone, and the missing certificate was news at the
    next run."""
    found = problems({"tls_server_config": {"cert_file": str(tmp_path / "none.crt"),
                                            "key_file": str(tmp_path / "none.key")},
                      "basic_auth_users": {"prometheus": "secret"}})
    assert any(p.startswith("basic_auth_users.prometheus: expected a bcrypt hash")
               for p in found), found
    assert any(p.startswith("tls_server_config.cert_file: cannot read ")
               for p in found), found


def test_relative_certificate_paths_are_read_beside_the_web_configuration(
        pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """exporter-toolkit reads a web configuration's relative `cert_file`, `key_file` and
    `client_ca_file` from the file's own folder (`SetDirectory(filepath.Dir(configPath))`),
    so an existing `web-config.yml` written that way must work here too, and must not depend
    on the directory the exporter was started from (systemd starts it in `/`)."""
    folder = tmp_path / "etc"
    folder.mkdir()
    for source, name in ((pki.server_cert, "tls.crt"), (pki.server_key, "tls.key"),
                         (pki.ca, "clients-ca.pem")):
        (folder / name).write_bytes(source.read_bytes())
    path = folder / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
                    "  client_ca_file: clients-ca.pem\n"
                    "  client_auth_type: RequireAndVerifyClientCert\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_web_config(path)
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_a_certificate_and_key_given_the_wrong_way_round_are_named_as_such(pki: Pki) -> None:
    """`cert_file` and `key_file` swapped, an easy slip with tls.crt and tls.key side by side,
    was refused with OpenSSL's own words, "[SSL] PEM lib (_ssl.c:3905)", which says neither
    which file is wrong nor what to do."""
    found = problems({"tls_server_config": {"cert_file": str(pki.server_key),
                                            "key_file": str(pki.server_cert)}})
    assert len(found) == 1, found
    assert "_ssl.c" not in found[0] and "PEM lib" not in found[0], found
    assert "private key" in found[0] or "swapped" in found[0], found


def test_a_key_of_another_certificate_is_named_with_both_files(pki: Pki,
                                                                tmp_path: Path) -> None:
    """OpenSSL's "KEY_VALUES_MISMATCH", at the key_file's line and column, in words."""
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {pki.client_cert}\n"
                    f"  key_file: {pki.server_key}\n")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:3:3: tls_server_config.key_file: the private key in {pki.server_key} does "
        f"not belong to the certificate in {pki.client_cert} (its first, the server's own): "
        "give the key it was made with, or that key's certificate"]


def test_a_file_holding_the_wrong_thing_says_what_it_holds(pki: Pki, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    found = problems({"tls_server_config": {"cert_file": str(pki.server_cert),
                                            "key_file": str(pki.server_cert)}})
    assert found == [f"tls_server_config.key_file: {pki.server_cert} holds no PEM private key "
                     "(-----BEGIN PRIVATE KEY-----), but a certificate"]
    found = problems({"tls_server_config": {"cert_file": str(empty),
                                            "key_file": str(pki.server_key)}})
    assert found == [f"tls_server_config.cert_file: {empty} holds no PEM certificate "
                     "(-----BEGIN CERTIFICATE-----)"]


def test_an_encrypted_key_is_refused_without_asking_for_its_password(
        pki: Pki, tmp_path: Path) -> None:
    """OpenSSL asks for a missing password on the terminal, where a check or a reload would
    wait for ever; the exporter asks for none, and says why the key cannot be used."""
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass phrase")))
    found = problems({"tls_server_config": {"cert_file": str(pki.server_cert),
                                            "key_file": str(encrypted)}})
    assert found == [f"tls_server_config.key_file: {encrypted} holds an encrypted private key, "
                     "and the exporter asks for no password: decrypt it into another file "
                     "(openssl pkey -in KEY -out PLAIN-KEY) and name that"]


def test_a_key_file_that_cannot_be_read_is_named_at_key_file_alone(pki: Pki,
                                                                    tmp_path: Path) -> None:
    """A key missing, or readable by root only while the check runs as the service's user,
    was reported at `tls_server_config.cert_file` as "cannot load certificate and key (CERT,
    KEY): [Errno 2] No such file or directory": the line and key named are the certificate's,
    which is there, and the message leaves the reader to guess which of the two files is at
    fault. A missing `ca_file` in the exporter's configuration says "no such file: PATH" at its
    own key; the key file deserves the same."""
    missing = tmp_path / "missing.key"
    found = problems({"tls_server_config": {"cert_file": str(pki.server_cert),
                                            "key_file": str(missing)}})
    assert len(found) == 1, found
    assert found[0].startswith("tls_server_config.key_file: "), found
    assert str(missing) in found[0] and str(pki.server_cert) not in found[0], found
    assert "Errno" not in found[0], found
    found = problems({"tls_server_config": {"cert_file": str(tmp_path / "missing.crt"),
                                            "key_file": str(pki.server_key)}})
    assert found[0].startswith("tls_server_config.cert_file: "), found
    assert str(pki.server_key) not in found[0] and "Errno" not in found[0], found
