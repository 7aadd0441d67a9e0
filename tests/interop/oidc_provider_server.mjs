// panva's oidc-provider on 127.0.0.1, for tokenflight's interoperability suite.
//
// Usage: node oidc_provider_server.mjs CONFIG.json
// CONFIG.json holds {"clients": [...]} (oidc-provider client metadata, RFC 7591 names).
// Listens on a free loopback port and prints one JSON line, {"issuer": ...}, when ready.
// Features: client_credentials, RFC 8707 resource indicators (JWT access tokens for the
// resource servers below), DPoP (RFC 9449; a nonce is required for clients whose id
// starts with "dpop-nonce"), and introspection.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// The resource servers this provider knows; any other `resource` is invalid_target.
const RESOURCE_SERVERS = {
  'https://api.example/': { scope: 'read write' },
  'https://reports.example/': { scope: 'read' },
};

const signing = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: config.clients,
    cookies: { keys: [randomBytes(32).toString('hex')] },
    jwks: { keys: [{ ...signing, kid: 'interop-rs256', alg: 'RS256', use: 'sig' }] },
    scopes: ['openid', 'read', 'write', 'admin'],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt'],
    enabledJWA: {
      clientAuthSigningAlgValues: ['HS256', 'RS256', 'PS256', 'ES256'],
      dPoPSigningAlgValues: ['ES256', 'RS256', 'PS256', 'EdDSA'],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      dPoP: {
        enabled: true,
        nonceSecret: randomBytes(32),
        requireNonce: (ctx) => Boolean(ctx.oidc.client?.clientId.startsWith('dpop-nonce')),
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => false,
        getResourceServerInfo: (ctx, resource) => {
          const known = RESOURCE_SERVERS[resource];
          if (!known) {
            throw new errors.InvalidTarget(`unknown resource ${resource}`);
          }
          return {
            scope: known.scope,
            audience: resource,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
