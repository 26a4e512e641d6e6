// An Auth0 post-login Action that records each access token in custos's
// ledger before Auth0 issues it, and puts the record's id in the token as
// custos_prv. Secrets: CUSTOS_URL, CUSTOS_ISSUER_CREDENTIAL (an issuer
// credential: custos credentials add auth0 --role issuer --provider NAME),
// AUDIENCE (the API identifier), LIFETIME (the API's token lifetime, s).
// A failure denies the login: no token is issued that custos did not record.
exports.onExecutePostLogin = async (event, api) => {
  const base = event.secrets.CUSTOS_URL;
  const auth = { Authorization: "Bearer " + event.secrets.CUSTOS_ISSUER_CREDENTIAL, "Content-Type": "application/json" };
  const fresh = await fetch(base + "/v1/ledger/prv", { method: "POST", headers: auth });
  if (!fresh.ok) return api.access.deny("custos: no provenance id");
  const { prv } = await fresh.json();
  const body = {
    iss: "https://" + event.request.hostname + "/",
    prv,
    sub: event.user.user_id,
    aud: [event.secrets.AUDIENCE],
    client_id: event.client.client_id,
    exp: Math.floor(Date.now() / 1000) + Number(event.secrets.LIFETIME) + 30,
  };
  const rec = await fetch(base + "/v1/ledger/record", { method: "POST", headers: auth, body: JSON.stringify(body) });
  if (!rec.ok) return api.access.deny("custos: not recorded");
  api.accessToken.setCustomClaim("custos_prv", prv);
};
