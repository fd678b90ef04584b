// A real OpenID Connect provider (the `oidc-provider` package) for vrata's end-to-end tests,
// shaped like Keycloak where vrata cares:
//   - issuer  http://127.0.0.1:PORT/realms/REALM, Keycloak's endpoint paths under it;
//   - client-credentials clients whose access tokens are RS256 JWTs (resource indicators,
//     accessTokenFormat 'jwt') for the audience AUDIENCE, carrying Keycloak-shaped claims:
//     realm_access.roles, resource_access.<AUDIENCE>.roles, scope, azp;
//   - signing-key rotation on demand: POST /rotate on the admin port (or SIGHUP) makes a new
//     key the signing key and keeps the previous one published (as Keycloak keeps a passive
//     key); POST /rotate?drop=1 also withdraws the previous one.
//
// Usage: node provider.mjs --port P --admin-port A [--realm demo] [--audience api-gateway]
// Prints one JSON line {"ready":true,"issuer":...} on stdout when both ports listen.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'admin-port': { type: 'string' },
    realm: { type: 'string', default: 'demo' },
    audience: { type: 'string', default: 'api-gateway' },
  },
});
if (!args.port || !args['admin-port']) {
  console.error('usage: node provider.mjs --port P --admin-port A [--realm demo] [--audience api-gateway]');
  process.exit(64);
}
const HOST = '127.0.0.1';
const ISSUER = `http://${HOST}:${args.port}/realms/${args.realm}`;
const AUDIENCE = args.audience;
// The resource indicator clients ask for (RFC 8707 requires an absolute URI); the token's
// `aud` is AUDIENCE, as a Keycloak audience mapper would produce.
const RESOURCE = `urn:vrata:${AUDIENCE}`;

// Client id -> Keycloak-style roles. `orders-client` has the realm role the examples require;
// `no-role-client` is a valid client lacking it (the 403 case).
const CLIENTS = {
  'orders-client': { secret: 'orders-secret', realm: ['orders:read', 'offline_access'], client: ['reader'] },
  'no-role-client': { secret: 'no-role-secret', realm: ['offline_access'], client: [] },
};
const SCOPES = 'orders.read orders.write';

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `k-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
}

function buildProvider(keys) {
  const provider = new Provider(ISSUER, {
    clients: Object.entries(CLIENTS).map(([id, c]) => ({
      client_id: id,
      client_secret: c.secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: SCOPES,
    })),
    jwks: { keys },
    scopes: ['openid', ...SCOPES.split(' ')],
    routes: {
      token: '/protocol/openid-connect/token',
      jwks: '/protocol/openid-connect/certs',
      userinfo: '/protocol/openid-connect/userinfo',
      introspection: '/protocol/openid-connect/token/introspect',
      revocation: '/protocol/openid-connect/revoke',
      authorization: '/protocol/openid-connect/auth',
      end_session: '/protocol/openid-connect/logout',
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (resource !== RESOURCE) throw new Error(`unknown resource ${resource}`);
          return {
            scope: SCOPES,
            audience: AUDIENCE,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => {
      const c = CLIENTS[token.clientId];
      if (!c) return undefined;
      return {
        azp: token.clientId,
        // Keycloak puts the service account's user id in `sub`; oidc-provider uses the client id.
        realm_access: { roles: c.realm },
        resource_access: { [AUDIENCE]: { roles: c.client } },
      };
    },
  });
  provider.proxy = false;
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

let keys = [newKey()];
let provider = buildProvider(keys);

// Rotation swaps the whole provider instance: oidc-provider's key store is fixed at
// construction, and client-credentials tokens are stateless JWTs, so nothing is lost.
function rotate({ drop }) {
  const fresh = newKey();
  keys = drop ? [fresh] : [fresh, keys[0]];
  provider = buildProvider(keys);
  console.log(JSON.stringify({ rotated: true, signing_kid: fresh.kid, published: keys.map((k) => k.kid) }));
  return { signing_kid: fresh.kid, published: keys.map((k) => k.kid) };
}

// oidc-provider routes relative to its mount point; the issuer's path is that mount point.
const PREFIX = new URL(ISSUER).pathname;
const server = createServer((req, res) => {
  if (req.url !== PREFIX && !req.url.startsWith(`${PREFIX}/`) && !req.url.startsWith(`${PREFIX}?`)) {
    res.writeHead(404).end();
    return;
  }
  // Express-style originalUrl: oidc-provider derives the mount path of the URLs it
  // publishes (jwks_uri, token_endpoint) from it.
  req.originalUrl = req.url;
  req.url = req.url.slice(PREFIX.length) || '/';
  provider.callback()(req, res);
});
const admin = createServer((req, res) => {
  const url = new URL(req.url, `http://${HOST}`);
  if (req.method === 'POST' && url.pathname === '/rotate') {
    const out = rotate({ drop: url.searchParams.get('drop') === '1' });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out));
  } else if (req.method === 'GET' && url.pathname === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ issuer: ISSUER, signing_kid: keys[0].kid, published: keys.map((k) => k.kid) }));
  } else {
    res.writeHead(404).end();
  }
});
process.on('SIGHUP', () => rotate({ drop: false }));
process.on('SIGTERM', () => {
  server.close();
  admin.close();
  process.exit(0);
});

await Promise.all([
  new Promise((ok) => server.listen(Number(args.port), HOST, ok)),
  new Promise((ok) => admin.listen(Number(args['admin-port']), HOST, ok)),
]);
console.log(JSON.stringify({ ready: true, issuer: ISSUER, admin: `http://${HOST}:${args['admin-port']}` }));
