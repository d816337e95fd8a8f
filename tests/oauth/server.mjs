// A local OAuth authorization server for Mayfly's integration tests, built on oidc-provider.
//
// It serves the client credentials grant with JWT access tokens to three clients: one
// authenticating with client_secret_basic, one with client_secret_post, and one with
// private_key_jwt whose keys come from Mayfly's JWKS (MAYFLY_JWKS_URI). It listens on 127.0.0.1
// (PORT, 0 for any free port) and prints one JSON line once ready: {"port": ..., "issuer": ...}.
//
// Test hooks, outside the OAuth protocol:
//   GET /__stats  token requests seen, successes, error codes, and the client assertions received
//   TOKEN_DELAY_MS  delays every token response, so concurrent requests overlap
//   ACCESS_TOKEN_TTL  lifetime of access tokens in seconds (default 3600)
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT ?? 0);
const jwksUri = process.env.MAYFLY_JWKS_URI;
const delayMs = Number(process.env.TOKEN_DELAY_MS ?? 0);
const accessTokenTtl = Number(process.env.ACCESS_TOKEN_TTL ?? 3600);
if (!jwksUri) {
  console.error('MAYFLY_JWKS_URI must be set');
  process.exit(2);
}

const SECRETS = { basic: 'reports-secret-basic', post: 'reports-secret-post' };
const SCOPES = 'reports:read reports:write';
const RESOURCE = 'https://reports.example/';

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-as-1', alg: 'ES256', use: 'sig' };

const stats = { token_requests: 0, successes: 0, errors: [], assertions: [] };
let issuer;

const clientBase = {
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  scope: SCOPES,
  // The server's only signing key is ES256, so the RS256 default would be invalid metadata.
  id_token_signed_response_alg: 'ES256',
};

function start(server) {
  const provider = new Provider(issuer, {
    clients: [
      { ...clientBase, client_id: 'reports-basic', client_secret: SECRETS.basic, token_endpoint_auth_method: 'client_secret_basic' },
      { ...clientBase, client_id: 'reports-post', client_secret: SECRETS.post, token_endpoint_auth_method: 'client_secret_post' },
      {
        ...clientBase,
        client_id: 'reports-jwt',
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'ES256',
        jwks_uri: jwksUri,
      },
    ],
    jwks: { keys: [signingKey] },
    // reports:admin exists but no client may request it, which makes it an invalid_scope.
    scopes: [...SCOPES.split(' '), 'reports:admin'],
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: SCOPES,
          audience: 'reports-api',
          accessTokenFormat: 'jwt',
          accessTokenTTL: accessTokenTtl,
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
    // Mayfly's JWKS is on a loopback address, which oidc-provider's fetch refuses by default to
    // block server-side request forgery. This test server removes that guard on purpose.
    fetch: (url, options) => {
      delete options.dispatcher;
      return globalThis.fetch(url, options);
    },
  });
  provider.proxy = false;

  provider.use(async (ctx, next) => {
    if (ctx.path === '/__stats') {
      ctx.type = 'application/json';
      ctx.body = JSON.stringify(stats);
      return;
    }
    const isToken = ctx.path === '/token' && ctx.method === 'POST';
    if (isToken) {
      stats.token_requests += 1;
      if (delayMs > 0) await new Promise((resolve) => { setTimeout(resolve, delayMs); });
    }
    await next();
    if (isToken) {
      const assertion = ctx.oidc?.params?.client_assertion;
      if (assertion) stats.assertions.push(assertion);
      if (ctx.status === 200) stats.successes += 1;
      else stats.errors.push(ctx.body?.error ?? String(ctx.status));
    }
  });

  server.on('request', provider.callback());
}

import { createServer } from 'node:http';

const server = createServer();
server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  issuer = `http://127.0.0.1:${actual}`;
  start(server);
  process.stdout.write(`${JSON.stringify({ port: actual, issuer })}\n`);
});
