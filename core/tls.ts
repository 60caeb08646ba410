/**
 * TLS to the brokers (rediss://, amqps://), shared by both backends: reading the CA file a
 * user names (REDIS_TLS_CA_FILE, RABBITMQ_TLS_CA_FILE) at start-up, and telling a TLS
 * failure (which waiting will not fix) from a network one (which it may), with what to do
 * about it in words a user can act on.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { ConfigError } from './errors.js';
import { raw, type Env } from './env.js';

/**
 * A broker's CA variable (REDIS_TLS_CA_FILE, RABBITMQ_TLS_CA_FILE), read now so a wrong path is a
 * ConfigError before any connection. Set without a TLS address it is refused rather than ignored:
 * the user meant TLS, and a plain connection would send the password in clear.
 */
export function caSetting(
  env: Env, variable: string, tls: boolean, broker: string, tlsAddress: string,
): { caFile: string | null; ca: string | null } {
  const caFile = raw(env, variable) ?? null;
  if (caFile === null) return { caFile, ca: null };
  if (!tls) {
    throw new ConfigError(`${variable} is set but the connection to ${broker} is not TLS: give the address as ${tlsAddress} (or unset ${variable})`);
  }
  return { caFile, ca: readCaFile(variable, caFile) };
}

/**
 * The PEM text of the CA file named by `variable`; a ConfigError naming the variable when the
 * file cannot be read or holds no certificate. Read once, before any connection is made.
 */
function readCaFile(variable: string, file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'a directory, not a file' : String(code ?? err);
    throw new ConfigError(`${variable}=${file}: ${why}; it must name the PEM file of the CA that signed the broker's certificate`);
  }
  if (!text.includes('-----BEGIN CERTIFICATE-----')) {
    throw new ConfigError(`${variable}=${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----); it must name the PEM file of the CA that signed the broker's certificate`);
  }
  return text;
}

/**
 * Options for tls.connect: the CA when one was given (it replaces the system's roots, as
 * `redis-cli --cacert` and `openssl s_client -CAfile` do), and SNI only for a host name (RFC
 * 6066 forbids an IP address there, and Node warns when given one). The certificate is always
 * verified: there is no switch to turn that off.
 */
export function tlsOptions(host: string, ca: string | null): { servername?: string; ca?: string } {
  return { ...(isIP(host) ? {} : { servername: host }), ...(ca !== null ? { ca } : {}) };
}

/** Verification failures whose cure is the right CA (Node's codes, from OpenSSL's X509_V_ERR_*). */
const UNTRUSTED = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_UNTRUSTED', 'CERT_SIGNATURE_FAILURE', 'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'INVALID_CA', 'CERT_REJECTED', 'CERT_CHAIN_TOO_LONG', 'PATH_LENGTH_EXCEEDED', 'INVALID_PURPOSE',
]);
const BAD_DATES = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'ERROR_IN_CERT_NOT_BEFORE_FIELD', 'ERROR_IN_CERT_NOT_AFTER_FIELD', 'CERT_REVOKED']);

export interface TlsContext {
  /** The broker, as messages name it. */
  broker: 'Redis' | 'RabbitMQ';
  /** Safe to print (no password). */
  address: string;
  host: string;
  /** The variable that names the CA file, and its value when set. */
  caVariable: string;
  caFile: string | null;
  /** The variable that holds the URL (REDIS_URL, AMQP_URL). */
  urlVariable: string;
  /** What the server must be told to stop asking for a client certificate. */
  clientCertSetting: string;
}

/**
 * When `err` is a failed TLS handshake, one line saying what failed and what to fix; null for
 * anything else (a refused or reset connection, an unknown host: those are retried).
 */
export function describeTlsFailure(err: unknown, ctx: TlsContext): string | null {
  if (!(err instanceof Error)) return null;
  const code = String((err as NodeJS.ErrnoException).code ?? '');
  const what = `${ctx.broker} at ${ctx.address} (TLS)`;
  // OpenSSL's messages run over several lines (file, line, a trailing newline): its reason is the part that says something.
  const reason = (err as { reason?: unknown }).reason;
  const cause = `${code ? `${code}: ` : ''}${typeof reason === 'string' ? reason : err.message}`.replace(/\s+/g, ' ').trim();
  if (UNTRUSTED.has(code)) {
    const fix = ctx.caFile === null
      ? `set ${ctx.caVariable} to the PEM file of the CA that signed it`
      : `${ctx.caVariable}=${ctx.caFile} is not the CA that signed it; point ${ctx.caVariable} at that CA's PEM file`;
    return `${what}: the server's certificate is not signed by a CA ttg trusts (${cause}); ${fix}`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH') {
    return `${what}: the server's certificate is not for the host "${ctx.host}" (${cause}); connect by a name or address the certificate lists (in ${ctx.urlVariable})`;
  }
  if (BAD_DATES.has(code)) {
    return `${what}: the server's certificate is not valid now (${cause}); renew it on the server, or check this machine's clock`;
  }
  if (/WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|HTTP_REQUEST|UNKNOWN_PROTOCOL/.test(code)) {
    return `${what}: the server does not speak TLS on this port (${cause}); use the broker's TLS port in ${ctx.urlVariable}, or its plain scheme for a plain port`;
  }
  if (/CERTIFICATE_REQUIRED|ALERT_HANDSHAKE_FAILURE|ALERT_BAD_CERTIFICATE|ALERT_UNKNOWN_CA/.test(code)) {
    return `${what}: the server refused the TLS handshake, most likely asking for a client certificate, which ttg does not send (${cause}); ` +
      `let clients connect without one (${ctx.clientCertSetting})`;
  }
  if (/^ERR_SSL_|^ERR_TLS_/.test(code)) {
    return `${what}: the TLS handshake failed (${cause}); check the server's TLS settings and ${ctx.caVariable}`;
  }
  return null;
}
