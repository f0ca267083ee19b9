"""TLS on `SSL` listeners (issue 17, docs/security.md): the server context from Kafka's `ssl.*` settings, and
the principal of a client that presented a certificate (mTLS).

Keys and certificates are PEM, as Kafka's `ssl.keystore.type=PEM`: `ssl.keystore.location` names a file with
the private key and the certificate chain, or `ssl.keystore.key` and `ssl.keystore.certificate.chain` hold
them inline; `ssl.key.password` decrypts an encrypted key. The trusted CAs for client certificates come from
`ssl.truststore.location` (a PEM file) or `ssl.truststore.certificates` (inline). TLS 1.2 is the oldest
version ever accepted (`ssl.enabled.protocols` may only narrow it to TLS 1.3).

A client's principal is `User:` + its certificate's subject as RFC 2253 writes it (Java's
X500Principal.getName(), what Kafka's DefaultKafkaPrincipalBuilder uses: `CN=alice,OU=eng,O=Acme`), mapped by
`ssl.principal.mapping.rules` (Kafka's syntax: `RULE:pattern/replacement/[LU]`, ..., `DEFAULT`). Without a
certificate (`ssl.client.auth=none` or `requested`) the client is `User:ANONYMOUS`.
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from dataclasses import dataclass
from typing import Callable

from lodestream.broker.config import ConfigError, multi_value
from lodestream.broker.session import ANONYMOUS, KafkaPrincipal

# RFC 2253 / RFC 4514 short names, as Java's X500Principal prints them.
_ATTRIBUTE_NAMES = {
    "commonName": "CN", "organizationalUnitName": "OU", "organizationName": "O", "localityName": "L",
    "stateOrProvinceName": "ST", "countryName": "C", "streetAddress": "STREET", "domainComponent": "DC",
    "userId": "UID",
}
_PROTOCOLS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class AuthenticationFailed(Exception):
    """A client whose certificate maps to no principal (no mapping rule applies)."""


def server_context(setting: Callable[[str], object], context_class: type[ssl.SSLContext] = ssl.SSLContext
                   ) -> ssl.SSLContext:
    """The SSLContext of an SSL listener from the `ssl.*` settings (`setting(key)`: the parsed value or None).
    ConfigError names the setting that is missing or unusable."""
    keystore_type = str(setting("ssl.keystore.type") or "PEM").upper()
    if keystore_type != "PEM":
        raise ConfigError(f"ssl.keystore.type={keystore_type}: only PEM keys and certificates are supported "
                          "(convert a JKS or PKCS12 keystore with keytool and openssl)")
    truststore_type = str(setting("ssl.truststore.type") or "PEM").upper()
    if truststore_type != "PEM":
        raise ConfigError(f"ssl.truststore.type={truststore_type}: only PEM trust stores are supported")
    context = context_class(ssl.PROTOCOL_TLS_SERVER)
    enabled = multi_value(str(setting("ssl.enabled.protocols") or "TLSv1.2,TLSv1.3"))
    unknown = [p for p in enabled if p not in _PROTOCOLS]
    if unknown or not enabled:
        raise ConfigError(f"ssl.enabled.protocols: {', '.join(unknown) or 'nothing'} is not allowed: TLSv1.2 "
                          "and TLSv1.3 are the versions served (older ones are broken)")
    context.minimum_version = min(_PROTOCOLS[p] for p in enabled)
    context.maximum_version = max(_PROTOCOLS[p] for p in enabled)
    ciphers = multi_value(str(setting("ssl.cipher.suites") or ""))
    if ciphers:
        try:
            context.set_ciphers(":".join(ciphers))
        except ssl.SSLError as exc:
            raise ConfigError(f"ssl.cipher.suites: {exc}") from None
    _load_keystore(context, setting)
    client_auth = str(setting("ssl.client.auth") or "none")
    context.verify_mode = _CLIENT_AUTH[client_auth]
    if client_auth != "none":
        _load_truststore(context, setting)
    return context


def client_context(setting: Callable[[str], object]) -> ssl.SSLContext:
    """The context a broker connects to other brokers' SSL inter-broker listener with: their certificates must
    chain to the trust store (and name the host, unless ssl.endpoint.identification.algorithm is empty, as in
    Kafka); the broker's own key and certificate are presented for mTLS. ConfigError names what is missing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        _load_truststore(context, setting)
    except ConfigError as exc:
        raise ConfigError(f"an SSL inter-broker listener: brokers check each other's certificates: {exc}") from None
    context.check_hostname = str(setting("ssl.endpoint.identification.algorithm") or "").lower() == "https"
    _load_keystore(context, setting)
    return context


def _load_keystore(context: ssl.SSLContext, setting: Callable[[str], object]) -> None:
    location, key, chain = (setting(k) for k in ("ssl.keystore.location", "ssl.keystore.key",
                                                 "ssl.keystore.certificate.chain"))
    password = setting("ssl.key.password")
    if not location and not (key and chain):
        raise ConfigError("an SSL listener needs its key and certificate: ssl.keystore.location (a PEM file with "
                          "both), or ssl.keystore.key and ssl.keystore.certificate.chain")
    if location:
        _load_chain(context, "ssl.keystore.location", str(location), None, password)
        return
    # ssl can only load files: the inline PEM goes through a private temporary file, removed at once.
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "keystore.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as out:
            out.write(f"{str(key).strip()}\n{str(chain).strip()}\n")
        _load_chain(context, "ssl.keystore.key", path, None, password)


def _load_chain(context: ssl.SSLContext, key_name: str, certfile: str, keyfile: str | None, password) -> None:
    try:
        context.load_cert_chain(certfile, keyfile, password=str(password) if password else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{key_name}: cannot load the key and certificate chain: {exc}") from None


def _load_truststore(context: ssl.SSLContext, setting: Callable[[str], object]) -> None:
    location, inline = setting("ssl.truststore.location"), setting("ssl.truststore.certificates")
    if not location and not inline:
        raise ConfigError("certificates are checked: set ssl.truststore.location (PEM CA certificates) or "
                          "ssl.truststore.certificates")
    try:
        if location:
            context.load_verify_locations(cafile=str(location))
        else:
            context.load_verify_locations(cadata=str(inline))
    except (OSError, ssl.SSLError) as exc:
        name = "ssl.truststore.location" if location else "ssl.truststore.certificates"
        raise ConfigError(f"{name}: cannot load the trusted certificates: {exc}") from None


def subject_dn(certificate: dict) -> str:
    """The subject of a certificate (ssl's getpeercert() form) as RFC 2253 writes it: most specific first."""
    parts = []
    for rdn in reversed(certificate.get("subject", ())):
        parts.append("+".join(f"{_ATTRIBUTE_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn))
    return ",".join(parts)


def _escape(value: str) -> str:
    escaped = re.sub(r'([,+"\\<>;])', r"\\\1", value)
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    return escaped[:-1] + "\\ " if escaped.endswith(" ") else escaped


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern | None  # None: DEFAULT
    replacement: str = ""
    case: str = ""  # "L" lower, "U" upper, "" as is


_RULE = re.compile(r"\s*(?:(DEFAULT)|RULE:((?:\\/|[^/])*)/((?:\\/|[^/])*)/([LU]?))\s*(?:,|$)")


def parse_mapping_rules(value: str) -> list[_Rule]:
    """ssl.principal.mapping.rules as Kafka's SslPrincipalMapper reads them; ConfigError when malformed."""
    rules, position, text = [], 0, value.strip()
    while position < len(text):
        found = _RULE.match(text, position)
        if found is None or found.end() == position:
            raise ConfigError(f"ssl.principal.mapping.rules: cannot read {text[position:]!r} (expected "
                              "RULE:pattern/replacement/[LU] or DEFAULT, comma-separated)")
        if found.group(1):
            rules.append(_Rule(None))
        else:
            try:
                pattern = re.compile(found.group(2).replace("\\/", "/"))
            except re.error as exc:
                raise ConfigError(f"ssl.principal.mapping.rules: bad pattern {found.group(2)!r}: {exc}") from None
            replacement = re.sub(r"\$(\d+)", r"\\g<\1>", found.group(3).replace("\\/", "/"))
            rules.append(_Rule(pattern, replacement, found.group(4)))
        position = found.end()
    return rules or [_Rule(None)]


def map_principal(dn: str, rules: list[_Rule]) -> str:
    """The short name of a distinguished name: the first rule whose pattern matches all of it."""
    for rule in rules:
        if rule.pattern is None:
            return dn
        if rule.pattern.fullmatch(dn):
            name = rule.pattern.sub(rule.replacement, dn, count=1)
            return name.lower() if rule.case == "L" else name.upper() if rule.case == "U" else name
    raise AuthenticationFailed(f"no ssl.principal.mapping.rules rule applies to {dn!r}")


def principal_of(certificate: dict | None, rules: list[_Rule]) -> KafkaPrincipal:
    if not certificate:
        return ANONYMOUS
    return KafkaPrincipal("User", map_principal(subject_dn(certificate), rules))
