"""The secret corpus: each shape, in argv, a path or an address, comes out without its secret.

Every token below is fake but has the real shape (prefix, alphabet, length).
Each case gives the exact expected output, so the parts that must be kept
(a URL's host, the flag name, the other arguments) are checked too, and the
secret substrings are checked to be absent from the output.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.redact import BUILTIN_RULES, MASK, Redactor, marker

GHP = "ghp_R4nd0mFakeT0kenForTests0123456789abcd"
GITHUB_PAT = "github_pat_11AAAAAAA0FakeFakeFake_FakeTokenForTestsOnly0123456789"
GLPAT = "glpat-FakeToken1234567890ab"
SLACK_TOKEN = "xoxb-123456789012-1234567890123-FakeSlackTokenValue"
SLACK_HOOK = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
DISCORD_HOOK = "https://discord.com/api/webhooks/123456789012345678/FakeDiscordWebhookToken_abc-def"
STRIPE = "sk_live_FAKEfake0123456789abcd"
STRIPE_WHSEC = "whsec_FakeStripeWebhookSecret0123"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GOOGLE_KEY = "AIzaSyFAKE-fake_0123456789abcdefghijklm"
GOOGLE_OAUTH = "ya29.FakeGoogleOauthAccessToken0123456789"
GOOGLE_CLIENT_SECRET = "GOCSPX-FakeGoogleClientSecret0123"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
NPM = "npm_FakeNpmToken0123456789abcdefghijkl"
PYPI = "pypi-AgEIcHlwaS5vcmcCJFakeFakeFake0123456789"
OPENAI = "sk-proj-FakeOpenAiKey0123456789abcdefXYZ"
ANTHROPIC = "sk-ant-api03-FakeAnthropicKey0123456789abcdef"
HF = "hf_FakeHuggingFaceToken0123456789abc"
DOCKER_PAT = "dckr_pat_FakeDockerHubToken012345"
VAULT = "hvs.CAESIFakeVaultToken0123456789abcdef"
SENDGRID = "SG.FakeSendGridKey0123.FakeSendGridSecret0123456789abcdef"
TELEGRAM = "123456789:AAFakeTelegramBotToken0123456789abcdefg"
TWILIO = "SK0123456789abcdef0123456789abcdef"
SHOPIFY = "shpat_0123456789abcdef0123456789abcdef"
DIGITALOCEAN = "dop_v1_" + "0123456789abcdef" * 4
MAILGUN = "key-0123456789abcdef0123456789abcdef"
AGE = "AGE-SECRET-KEY-1FAKEAGEKEY0123456789QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
AZURE_KEY = "FakeAzureKey0123456789abcdef+/=="


@dataclass(frozen=True)
class Case:
    shape: str  # what kind of secret: one name per shape, unique
    kind: str  # "argv", "path" or "address"
    given: tuple[str, ...] | str
    expected: tuple[str, ...] | str
    secrets: tuple[str, ...]  # substrings that must not appear in the output
    rule: str  # a rule that must be among those that fired


def argv(
    shape: str, given: tuple[str, ...], expected: tuple[str, ...], *secrets: str, rule: str
) -> Case:
    return Case(shape, "argv", given, expected, secrets, rule)


def path(shape: str, given: str, expected: str, *secrets: str, rule: str) -> Case:
    return Case(shape, "path", given, expected, secrets, rule)


def address(shape: str, given: str, expected: str, *secrets: str, rule: str) -> Case:
    return Case(shape, "address", given, expected, secrets, rule)


def dropped(rule: str) -> str:
    return marker(rule)


CORPUS: tuple[Case, ...] = (
    # --- argv: flags -------------------------------------------------------
    argv("flag=value", ("app", "--password=hunter2"), ("app", "--password=***"), "hunter2", rule="secret-flag"),
    argv("flag value", ("app", "--password", "hunter2", "--verbose"), ("app", "--password", MASK, "--verbose"), "hunter2", rule="secret-flag"),
    argv("--token value", ("cli", "--token", "tok-0123", "sync"), ("cli", "--token", MASK, "sync"), "tok-0123", rule="secret-flag"),
    argv("--secret=value", ("vault-cli", "--secret=v4ultS3cret"), ("vault-cli", "--secret=***"), "v4ultS3cret", rule="secret-flag"),
    argv("--api-key=value", ("deploy", "--api-key=k3yv4lue", "--region", "eu"), ("deploy", "--api-key=***", "--region", "eu"), "k3yv4lue", rule="secret-flag"),
    argv("--apikey value", ("tool", "--apikey", "apikeyV4l"), ("tool", "--apikey", MASK), "apikeyV4l", rule="secret-flag"),
    argv("--client-secret value", ("oauth-cli", "--client-secret", "cl13ntS3cret"), ("oauth-cli", "--client-secret", MASK), "cl13ntS3cret", rule="secret-flag"),
    argv("--access-key/--secret-key", ("s3cmd", "--access-key=akVal1", "--secret-key=skVal2", "ls"), ("s3cmd", "--access-key=***", "--secret-key=***", "ls"), "akVal1", "skVal2", rule="secret-flag"),
    argv("--db-password (prefixed)", ("migrate", "--db-password", "dbpw-123", "up"), ("migrate", "--db-password", MASK, "up"), "dbpw-123", rule="secret-flag"),
    argv("--passwd/--pass", ("ftp-sync", "--passwd=pw1x", "--pass", "pw2x"), ("ftp-sync", "--passwd=***", "--pass", MASK), "pw1x", "pw2x", rule="secret-flag"),
    argv("--auth user:pass", ("http", "--auth", "alice:httpiePW", "example.com"), ("http", "--auth", MASK, "example.com"), "httpiePW", rule="secret-flag"),
    argv("keytool -storepass", ("keytool", "-list", "-keystore", "ks.jks", "-storepass", "changeitPW"), ("keytool", "-list", "-keystore", "ks.jks", "-storepass", MASK), "changeitPW", rule="secret-flag"),
    argv("openssl -passout", ("openssl", "pkcs12", "-export", "-passout", "pass:p12PW"), ("openssl", "pkcs12", "-export", "-passout", MASK), "p12PW", rule="secret-flag"),
    argv("gpg --passphrase", ("gpg", "--batch", "--passphrase", "gpgPass1", "-c", "f"), ("gpg", "--batch", "--passphrase", MASK, "-c", "f"), "gpgPass1", rule="secret-flag"),
    argv("wget --http-password=", ("wget", "--http-password=wgetPW1", "https://example.com/f"), ("wget", "--http-password=***", "https://example.com/f"), "wgetPW1", rule="secret-flag"),
    # --- argv: environment-style assignments -------------------------------
    argv("*_TOKEN=", ("env", "GITHUB_TOKEN=plainTok1", "make"), ("env", "GITHUB_TOKEN=***", "make"), "plainTok1", rule="env-secret"),
    argv("PGPASSWORD= with spaces", ("env", "PGPASSWORD=pg pass word", "psql"), ("env", "PGPASSWORD=***", "psql"), "pg pass word", rule="env-secret"),
    argv("*_PASSWORD= via docker -e", ("docker", "run", "-e", "DB_PASSWORD=dockerDbPW", "app"), ("docker", "run", "-e", "DB_PASSWORD=***", "app"), "dockerDbPW", rule="env-secret"),
    argv("*_SECRET= inside --env=", ("docker", "run", "--env=APP_SECRET=envFlagSec", "app"), ("docker", "run", "--env=APP_SECRET=***", "app"), "envFlagSec", rule="env-secret-inline"),
    argv("*_KEY=", ("env", "STRIPE_KEY=plainKey1", "node", "app.js"), ("env", "STRIPE_KEY=***", "node", "app.js"), "plainKey1", rule="env-secret"),
    argv("aws_secret_access_key", ("docker", "run", "-e", f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", "app"), ("docker", "run", "-e", dropped("aws-secret-access-key"), "app"), AWS_SECRET, rule="aws-secret-access-key"),
    argv("-D...Password=", ("java", "-Djavax.net.ssl.keyStorePassword=jksPW1", "-jar", "app.jar"), ("java", "-Djavax.net.ssl.keyStorePassword=***", "-jar", "app.jar"), "jksPW1", rule="password-assignment"),
    argv("libpq conninfo password=", ("psql", "host=db.internal user=app password=connPW1 dbname=appdb"), ("psql", "host=db.internal user=app password=*** dbname=appdb"), "connPW1", rule="password-assignment"),
    argv("JSON body password", ("curl", "-d", '{"user":"alice","password":"jsonPW1"}', "https://api.example.com/login"), ("curl", "-d", '{"user":"alice","password":"***"}', "https://api.example.com/login"), "jsonPW1", rule="json-secret-field"),
    # --- argv: URLs --------------------------------------------------------
    argv("https userinfo", ("git", "clone", "https://alice:s3cretPW@git.example.com/team/repo.git"), ("git", "clone", "https://git.example.com/team/repo.git"), "s3cretPW", "alice:", rule="url-userinfo"),
    argv("x-access-token userinfo", ("git", "clone", "https://x-access-token:ghAppTok1@github.com/org/repo"), ("git", "clone", "https://github.com/org/repo"), "ghAppTok1", rule="url-userinfo"),
    argv("postgresql URI", ("psql", "postgresql://app:pgUriPW@db.internal:5432/appdb?sslmode=require"), ("psql", "postgresql://db.internal:5432/appdb?sslmode=require"), "pgUriPW", rule="url-userinfo"),
    argv("query access_token", ("curl", "https://api.example.com/v1/items?page=2&access_token=qTok123&sort=asc"), ("curl", "https://api.example.com/v1/items?page=2&access_token=***&sort=asc"), "qTok123", rule="query-secret"),
    argv("query ?token=", ("curl", "https://example.com/dl?token=qTok456"), ("curl", "https://example.com/dl?token=***"), "qTok456", rule="query-secret"),
    argv("query sig=", ("az", "storage", "blob", "download", "--blob-url", "https://acct.blob.core.windows.net/c/b?sv=2022&sig=qSig789%3D"), ("az", "storage", "blob", "download", "--blob-url", "https://acct.blob.core.windows.net/c/b?sv=2022&sig=***"), "qSig789", rule="query-secret"),
    argv("query &password=", ("curl", "https://legacy.example.com/login?user=bob&password=qPW1"), ("curl", "https://legacy.example.com/login?user=bob&password=***"), "qPW1", rule="password-assignment"),
    # --- argv: headers -----------------------------------------------------
    argv("Authorization: Bearer", ("curl", "-H", "Authorization: Bearer opaqueFakeToken123", "https://api.example.com"), ("curl", "-H", dropped("authorization-header"), "https://api.example.com"), "opaqueFakeToken123", rule="authorization-header"),
    argv("Authorization: Basic", ("curl", "--header=Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "https://api.example.com"), ("curl", dropped("authorization-header"), "https://api.example.com"), "YWxhZGRpbjpvcGVuc2VzYW1l", rule="authorization-header"),
    argv("Authorization: Token in git -c", ("git", "-c", "http.extraHeader=Authorization: Token hdrTok1", "fetch"), ("git", "-c", dropped("authorization-header"), "fetch"), "hdrTok1", rule="authorization-header"),
    argv("Authorization glued to -H", ("curl", "-HAuthorization: Bearer gluedTok1", "https://api.example.com"), ("curl", dropped("authorization-header"), "https://api.example.com"), "gluedTok1", rule="authorization-header"),
    argv("Authorization in a JSON body", ("curl", "-d", '{"headers":{"Authorization":"Bearer jsonHdrTok"}}', "https://hook.example.com"), ("curl", "-d", dropped("authorization-header"), "https://hook.example.com"), "jsonHdrTok", rule="authorization-header"),
    argv("X-API-Key header", ("curl", "-H", "X-API-Key: fakeApiKey123", "https://api.example.com"), ("curl", "-H", dropped("api-key-header"), "https://api.example.com"), "fakeApiKey123", rule="api-key-header"),
    argv("Cookie header", ("curl", "-H", "Cookie: session=fakeSessionCookie1", "https://example.com"), ("curl", "-H", dropped("cookie-header"), "https://example.com"), "fakeSessionCookie1", rule="cookie-header"),
    # --- argv: program-specific password flags -----------------------------
    argv("mysql -pSECRET", ("mysql", "-uroot", "-pmyS3cret", "appdb"), ("mysql", "-uroot", "-p***", "appdb"), "myS3cret", rule="mysql-password"),
    argv("sudo /usr/bin/mysqldump -pSECRET", ("sudo", "/usr/bin/mysqldump", "-pdumpS3cret", "appdb"), ("sudo", "/usr/bin/mysqldump", "-p***", "appdb"), "dumpS3cret", rule="mysql-password"),
    argv("sshpass -p X", ("sshpass", "-p", "sshpassPW", "ssh", "deploy@10.0.0.5"), ("sshpass", "-p", MASK, "ssh", "deploy@10.0.0.5"), "sshpassPW", rule="sshpass-password"),
    argv("redis-cli -a X", ("redis-cli", "-h", "cache", "-a", "redisPW1", "ping"), ("redis-cli", "-h", "cache", "-a", MASK, "ping"), "redisPW1", rule="redis-cli-password"),
    argv("mongosh -p X", ("mongosh", "-u", "admin", "-p", "mongoPW1", "--authenticationDatabase", "admin"), ("mongosh", "-u", "admin", "-p", MASK, "--authenticationDatabase", "admin"), "mongoPW1", rule="mongo-password"),
    argv("zip -P X", ("zip", "-P", "zipPW1", "-r", "out.zip", "dir"), ("zip", "-P", MASK, "-r", "out.zip", "dir"), "zipPW1", rule="zip-password"),
    argv("7z -pSECRET", ("7z", "a", "-p7zPW1", "out.7z", "dir"), ("7z", "a", "-p***", "out.7z", "dir"), "7zPW1", rule="archive-password"),
    argv("sqlcmd -P X", ("sqlcmd", "-S", "db", "-U", "sa", "-P", "sqlPW1", "-Q", "select 1"), ("sqlcmd", "-S", "db", "-U", "sa", "-P", MASK, "-Q", "select 1"), "sqlPW1", rule="sqlcmd-password"),
    argv("curl -u user:pass", ("curl", "-u", "alice:curlPW1", "https://example.com/api"), ("curl", "-u", MASK, "https://example.com/api"), "curlPW1", rule="curl-user"),
    argv("curl --user=user:pass", ("curl", "--user=alice:curlPW2", "https://example.com"), ("curl", "--user=***", "https://example.com"), "curlPW2", rule="curl-user"),
    argv("curl -b cookie", ("curl", "-b", "session=cookiePW1", "https://example.com"), ("curl", "-b", MASK, "https://example.com"), "cookiePW1", rule="curl-cookie"),
    argv("httpie -a user:pass", ("http", "-a", "alice:httpieShortPW", "example.com/api"), ("http", "-a", MASK, "example.com/api"), "httpieShortPW", rule="httpie-auth"),
    argv("--api-key= inside a command string", ("tmux", "new-session", "-d", "app --api-key=inlineKey1 --port 80"), ("tmux", "new-session", "-d", "app --api-key=*** --port 80"), "inlineKey1", rule="secret-flag-inline"),
    argv("docker login -p X", ("docker", "login", "-u", "bob", "-p", "dockerPW1", "registry.example.com"), ("docker", "login", "-u", "bob", "-p", MASK, "registry.example.com"), "dockerPW1", rule="login-password"),
    argv("http POST token=X", ("http", "POST", "api.example.com/x", "token=httpTok123"), ("http", "POST", "api.example.com/x", "token=***"), "httpTok123", rule="secret-assignment"),
    argv("curl -d api_key=X&x=1", ("curl", "-d", "api_key=formKey123&x=1", "https://example.com"), ("curl", "-d", "api_key=***&x=1", "https://example.com"), "formKey123", rule="secret-assignment"),
    argv("X-Auth-Key header", ("curl", "-H", "X-Auth-Key: authKey123", "https://example.com"), ("curl", "-H", dropped("api-key-header"), "https://example.com"), "authKey123", rule="api-key-header"),
    argv("aws configure set secret", ("aws", "configure", "set", "aws_secret_access_key", "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY1"), ("aws", "configure", "set", "aws_secret_access_key", MASK), "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY1", rule="aws-configure-secret"),
    argv("ssh-keygen -N X", ("ssh-keygen", "-t", "ed25519", "-N", "hunter2x", "-f", "k"), ("ssh-keygen", "-t", "ed25519", "-N", MASK, "-f", "k"), "hunter2x", rule="ssh-keygen-passphrase"),
    # --- argv: secrets inside a shell command line -------------------------
    argv("bash -c 'mysql -pX'", ("bash", "-c", "mysql -uroot -pshellPW1 appdb < dump.sql"), ("bash", "-c", "mysql -uroot -p*** appdb < dump.sql"), "shellPW1", rule="shell-mysql-password"),
    argv("sh -c '--token X'", ("sh", "-c", "deploy --token shTok123 --env prod"), ("sh", "-c", "deploy --token *** --env prod"), "shTok123", rule="shell-secret-flag"),
    argv("ssh host 'cd && PGPASSWORD=X cmd'", ("ssh", "db1", "cd /srv && PGPASSWORD=remotePW1 pg_dump appdb"), ("ssh", "db1", "cd /srv && PGPASSWORD=*** pg_dump appdb"), "remotePW1", rule="env-secret-inline"),
    argv("entry starting with PGPASSWORD=", ("ssh", "db1", "PGPASSWORD=remotePW2 pg_dump appdb"), ("ssh", "db1", "PGPASSWORD=***"), "remotePW2", rule="env-secret"),
    argv("sh -c \"sshpass -p 'X'\"", ("sh", "-c", "sshpass -p 'innerPW1' ssh host uptime"), ("sh", "-c", "sshpass -p '***' ssh host uptime"), "innerPW1", rule="shell-sshpass-password"),
    argv("bash -c 'curl -u user:pass'", ("bash", "-c", "curl -sS -u bob:innerCurlPW https://example.com"), ("bash", "-c", "curl -sS -u *** https://example.com"), "innerCurlPW", rule="shell-curl-user"),
    # --- argv: forbidden tokens --------------------------------------------
    argv("AWS access key id", ("aws", "configure", "set", "aws_access_key_id", AWS_KEY_ID), ("aws", "configure", "set", "aws_access_key_id", dropped("aws-access-key-id")), AWS_KEY_ID, rule="aws-access-key-id"),
    argv("GitHub ghp_ in a URL", ("git", "push", f"https://{GHP}@github.com/org/repo.git"), ("git", "push", dropped("github-token")), GHP, rule="github-token"),
    argv("GitHub fine-grained PAT", ("env", f"GH_TOKEN={GITHUB_PAT}", "gh", "pr", "list"), ("env", dropped("github-fine-grained-pat"), "gh", "pr", "list"), GITHUB_PAT, rule="github-fine-grained-pat"),
    argv("GitLab glpat-", ("git", "clone", f"https://oauth2:{GLPAT}@gitlab.com/g/p.git"), ("git", "clone", dropped("gitlab-token")), GLPAT, rule="gitlab-token"),
    argv("Slack xoxb-", ("slack-notify", f"--token={SLACK_TOKEN}"), ("slack-notify", dropped("slack-token")), SLACK_TOKEN, rule="slack-token"),
    argv("Slack webhook", ("curl", "-X", "POST", "-d", "{}", SLACK_HOOK), ("curl", "-X", "POST", "-d", "{}", dropped("slack-webhook")), "XXXXXXXXXXXXXXXXXXXXXXXX", rule="slack-webhook"),
    argv("Discord webhook", ("curl", DISCORD_HOOK), ("curl", dropped("discord-webhook")), "FakeDiscordWebhookToken", rule="discord-webhook"),
    argv("Stripe sk_live_", ("stripe", "--api-key", STRIPE, "charges", "list"), ("stripe", "--api-key", MASK, "charges", "list"), STRIPE, rule="secret-flag"),
    argv("Stripe sk_live_ inline", ("node", "pay.js", STRIPE), ("node", "pay.js", dropped("stripe-secret-key")), STRIPE, rule="stripe-secret-key"),
    argv("Stripe whsec_", ("stripe", "listen", f"--secret={STRIPE_WHSEC}"), ("stripe", "listen", dropped("stripe-webhook-secret")), STRIPE_WHSEC, rule="stripe-webhook-secret"),
    argv("Google API key", ("curl", f"https://maps.googleapis.com/maps/api/geocode/json?key={GOOGLE_KEY}"), ("curl", dropped("google-api-key")), GOOGLE_KEY, rule="google-api-key"),
    argv("Google OAuth ya29.", ("gsutil", "-o", f"Credentials:gs_oauth2_refresh_token={GOOGLE_OAUTH}", "ls"), ("gsutil", "-o", dropped("google-oauth-token"), "ls"), GOOGLE_OAUTH, rule="google-oauth-token"),
    argv("Google client secret GOCSPX-", ("oauth2l", "fetch", GOOGLE_CLIENT_SECRET), ("oauth2l", "fetch", dropped("google-oauth-client-secret")), GOOGLE_CLIENT_SECRET, rule="google-oauth-client-secret"),
    argv("JWT", ("grpcurl", "-rpc-header", f"x-session: {JWT}", "api:443", "Svc/Call"), ("grpcurl", "-rpc-header", dropped("jwt"), "api:443", "Svc/Call"), JWT, rule="jwt"),
    argv("private key block", ("ssh-add", "-", PRIVATE_KEY), ("ssh-add", "-", dropped("private-key-block")), "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ", rule="private-key-block"),
    argv("PuTTY key", ("pageant", "PuTTY-User-Key-File-3: ssh-ed25519"), ("pageant", dropped("putty-private-key")), "PuTTY-User-Key-File", rule="putty-private-key"),
    argv("age secret key", ("age", "-d", "-i", AGE), ("age", "-d", "-i", dropped("age-secret-key")), AGE, rule="age-secret-key"),
    argv("npm token", ("npm", "config", "set", f"//registry.npmjs.org/:_authToken={NPM}"), ("npm", "config", "set", dropped("npm-token")), NPM, rule="npm-token"),
    argv("PyPI token", ("twine", "upload", "-u", "__token__", "-p", PYPI, "dist/*"), ("twine", "upload", "-u", "__token__", "-p", dropped("pypi-token"), "dist/*"), PYPI, rule="pypi-token"),
    argv("OpenAI key", ("env", f"OPENAI_KEY_FILE_IS_NOT={OPENAI}"), ("env", dropped("openai-api-key")), OPENAI, rule="openai-api-key"),
    argv("Anthropic key", ("claude-cli", ANTHROPIC), ("claude-cli", dropped("anthropic-api-key")), ANTHROPIC, rule="anthropic-api-key"),
    argv("Hugging Face token", ("huggingface-cli", "login", "--token", HF), ("huggingface-cli", "login", "--token", MASK), HF, rule="secret-flag"),
    argv("Docker Hub PAT", ("sh", "-c", f"echo {DOCKER_PAT} | docker login -u bob --password-stdin"), ("sh", "-c", dropped("docker-hub-token")), DOCKER_PAT, rule="docker-hub-token"),
    argv("Vault hvs.", ("vault", "token", "lookup", VAULT), ("vault", "token", "lookup", dropped("vault-token")), VAULT, rule="vault-token"),
    argv("SendGrid key", ("sendgrid-cli", SENDGRID), ("sendgrid-cli", dropped("sendgrid-api-key")), SENDGRID, rule="sendgrid-api-key"),
    argv("Telegram bot token", ("curl", f"https://api.telegram.org/bot{TELEGRAM}/getMe"), ("curl", dropped("telegram-bot-token")), TELEGRAM, rule="telegram-bot-token"),
    argv("Twilio API key", ("twilio", "api", "--key", TWILIO), ("twilio", "api", "--key", dropped("twilio-api-key")), TWILIO, rule="twilio-api-key"),
    argv("Shopify token", ("shopify-cli", SHOPIFY), ("shopify-cli", dropped("shopify-token")), SHOPIFY, rule="shopify-token"),
    argv("DigitalOcean token", ("doctl", "auth", "init", "-t", DIGITALOCEAN), ("doctl", "auth", "init", "-t", dropped("digitalocean-token")), DIGITALOCEAN, rule="digitalocean-token"),
    argv("Mailgun key", ("mg-send", MAILGUN), ("mg-send", dropped("mailgun-api-key")), MAILGUN, rule="mailgun-api-key"),
    argv("Azure storage connection string", ("az", "storage", "blob", "list", "--connection-string", f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net"), ("az", "storage", "blob", "list", "--connection-string", dropped("azure-storage-key")), AZURE_KEY, rule="azure-storage-key"),
    # --- argv: more program-specific secrets ------------------------------
    argv("openssl enc -k PW", ("openssl", "enc", "-aes256", "-k", "encPW1", "-in", "f"), ("openssl", "enc", "-aes256", "-k", MASK, "-in", "f"), "encPW1", rule="openssl-key"),
    argv("openssl enc -K hexkey", ("openssl", "enc", "-aes-256-cbc", "-K", "00112233445566778899aabbccddeeff", "-iv", "0102"), ("openssl", "enc", "-aes-256-cbc", "-K", MASK, "-iv", "0102"), "00112233445566778899aabbccddeeff", rule="openssl-key"),
    argv("openssl dgst -hmac KEY", ("openssl", "dgst", "-sha256", "-hmac", "hmacKey1", "body.json"), ("openssl", "dgst", "-sha256", "-hmac", MASK, "body.json"), "hmacKey1", rule="openssl-key"),
    argv("openssl -pass pass:PW", ("openssl", "enc", "-d", "-aes256", "-pass", "pass:encPW2", "-in", "f.enc"), ("openssl", "enc", "-d", "-aes256", "-pass", MASK, "-in", "f.enc"), "encPW2", rule="secret-flag"),
    argv("openssl -passin=pass:PW", ("openssl", "rsa", "-in", "k.pem", "-passin=pass:rsaPW1"), ("openssl", "rsa", "-in", "k.pem", "-passin=***"), "rsaPW1", rule="secret-flag"),
    argv("openssl -passin env:VAR (masked too)", ("openssl", "rsa", "-in", "k.pem", "-passin", "env:KEY_PASS"), ("openssl", "rsa", "-in", "k.pem", "-passin", MASK), "env:KEY_PASS", rule="secret-flag"),
    argv("ldapsearch -w PW", ("ldapsearch", "-x", "-D", "cn=admin,dc=example,dc=org", "-w", "ldapPW1", "-b", "dc=example,dc=org"), ("ldapsearch", "-x", "-D", "cn=admin,dc=example,dc=org", "-w", MASK, "-b", "dc=example,dc=org"), "ldapPW1", rule="ldap-password"),
    argv("ldapadd -wPW glued", ("ldapadd", "-x", "-D", "cn=admin", "-wldapPW2", "-f", "add.ldif"), ("ldapadd", "-x", "-D", "cn=admin", "-w***", "-f", "add.ldif"), "ldapPW2", rule="ldap-password"),
    argv("ldapmodify -w PW via sudo", ("sudo", "/usr/bin/ldapmodify", "-H", "ldap://ldap1", "-D", "cn=admin", "-w", "ldapPW3", "-f", "m.ldif"), ("sudo", "/usr/bin/ldapmodify", "-H", "ldap://ldap1", "-D", "cn=admin", "-w", MASK, "-f", "m.ldif"), "ldapPW3", rule="ldap-password"),
    argv("ldappasswd -a OLD -s NEW", ("ldappasswd", "-x", "-D", "uid=bob,dc=x", "-w", "bindPW1", "-a", "oldPW1", "-s", "newPW1", "uid=bob,dc=x"), ("ldappasswd", "-x", "-D", "uid=bob,dc=x", "-w", MASK, "-a", MASK, "-s", MASK, "uid=bob,dc=x"), "bindPW1", "oldPW1", "newPW1", rule="ldappasswd-password"),
    argv("smbclient -U user%PW", ("smbclient", "//fs1/share", "-U", "alice%smbPW1", "-c", "ls"), ("smbclient", "//fs1/share", "-U", MASK, "-c", "ls"), "smbPW1", rule="samba-user"),
    argv("smbclient -Uuser%PW glued", ("smbclient", "//fs1/share", "-UCORP\\alice%smbPW2"), ("smbclient", "//fs1/share", "-UCORP\\alice%***"), "smbPW2", rule="samba-user"),
    argv("rpcclient --user=user%PW", ("rpcclient", "--user=alice%smbPW3", "-c", "enumdomusers", "dc1"), ("rpcclient", "--user=alice%***", "-c", "enumdomusers", "dc1"), "smbPW3", rule="samba-user"),
    argv("net ads join -U user%PW", ("net", "ads", "join", "-U", "Administrator%joinPW1"), ("net", "ads", "join", "-U", MASK), "joinPW1", rule="samba-user"),
    argv("smbtar -p PW", ("smbtar", "-s", "fs1", "-x", "share", "-u", "alice", "-p", "tarPW1", "-t", "/dev/st0"), ("smbtar", "-s", "fs1", "-x", "share", "-u", "alice", "-p", MASK, "-t", "/dev/st0"), "tarPW1", rule="smbtar-password"),
    argv("mount.cifs -o password= (later options go too)", ("mount.cifs", "//fs1/share", "/mnt", "-o", "username=alice,password=cifsPW1,vers=3.0"), ("mount.cifs", "//fs1/share", "/mnt", "-o", "username=alice,password=***"), "cifsPW1", rule="password-assignment"),
    argv("lftp -u user,PW", ("lftp", "-u", "alice,lftpPW1", "sftp://files.example.com"), ("lftp", "-u", MASK, "sftp://files.example.com"), "lftpPW1", rule="lftp-user"),
    argv("lftp -uuser,PW glued", ("lftp", "-ualice,lftpPW2", "ftp.example.com"), ("lftp", "-ualice,***", "ftp.example.com"), "lftpPW2", rule="lftp-user"),
    argv("lftp -c 'open -u user,PW'", ("lftp", "-c", "open -u alice,lftpPW3 ftp.example.com; mirror pub"), ("lftp", "-c", "open -u *** ftp.example.com; mirror pub"), "lftpPW3", rule="shell-tool-password"),
    argv("sqlplus user/PW@db", ("sqlplus", "-s", "scott/oraPW1@//db1:1521/orcl", "@report.sql"), ("sqlplus", "-s", "scott/***@//db1:1521/orcl", "@report.sql"), "oraPW1", rule="oracle-password"),
    argv("sqlplus quoted password", ("sqlplus", 'system/"ora@PW2"@prod'), ("sqlplus", "system/***@prod"), "ora@PW2", rule="oracle-password"),
    argv("expdp userid=user/PW", ("expdp", "userid=scott/oraPW3", "directory=DATA_PUMP_DIR", "dumpfile=x.dmp"), ("expdp", "userid=scott/***", "directory=DATA_PUMP_DIR", "dumpfile=x.dmp"), "oraPW3", rule="oracle-password"),
    argv("rman target sys/PW@db", ("rman", "target", "sys/oraPW4@prod", "catalog", "rco/oraPW5@cat"), ("rman", "target", "sys/***@prod", "catalog", "rco/***@cat"), "oraPW4", "oraPW5", rule="oracle-password"),
    argv("xfreerdp /p:PW", ("xfreerdp", "/u:alice", "/p:rdpPW1", "/v:win1.example.com"), ("xfreerdp", "/u:alice", "/p:***", "/v:win1.example.com"), "rdpPW1", rule="freerdp-password"),
    argv("xfreerdp /gp: and /pth:", ("xfreerdp3", "/gu:bob", "/gp:gwPW1", "/pth:8846f7eaee8fb117ad06bdd830b7586c", "/v:h"), ("xfreerdp3", "/gu:bob", "/gp:***", "/pth:***", "/v:h"), "gwPW1", "8846f7eaee8fb117ad06bdd830b7586c", rule="freerdp-password"),
    argv("ipmitool -P PW", ("ipmitool", "-I", "lanplus", "-H", "bmc1", "-U", "admin", "-P", "ipmiPW1", "chassis", "power", "status"), ("ipmitool", "-I", "lanplus", "-H", "bmc1", "-U", "admin", "-P", MASK, "chassis", "power", "status"), "ipmiPW1", rule="ipmitool-password"),
    argv("ipmitool -PPW -y key", ("ipmitool", "-H", "bmc1", "-PipmiPW2", "-y", "0123abcd", "sel", "list"), ("ipmitool", "-H", "bmc1", "-P***", "-y", MASK, "sel", "list"), "ipmiPW2", "0123abcd", rule="ipmitool-password"),
    argv("snmpwalk -A PW -X PW", ("snmpwalk", "-v3", "-l", "authPriv", "-u", "mon", "-a", "SHA", "-A", "snmpAuth1", "-x", "AES", "-X", "snmpPriv1", "sw1"), ("snmpwalk", "-v3", "-l", "authPriv", "-u", "mon", "-a", "SHA", "-A", MASK, "-x", "AES", "-X", MASK, "sw1"), "snmpAuth1", "snmpPriv1", rule="snmp-secret"),
    argv("snmpget -c community", ("snmpget", "-v2c", "-c", "s3cretCommunity", "sw1", "sysUpTime.0"), ("snmpget", "-v2c", "-c", MASK, "sw1", "sysUpTime.0"), "s3cretCommunity", rule="snmp-secret"),
    argv("ncftp -p PW", ("ncftpput", "-u", "alice", "-p", "ncftpPW1", "ftp.example.com", "/in", "f.txt"), ("ncftpput", "-u", "alice", "-p", MASK, "ftp.example.com", "/in", "f.txt"), "ncftpPW1", rule="ncftp-password"),
    argv("wget --ftp-password PW", ("wget", "--ftp-user=alice", "--ftp-password", "wgetPW2", "ftp://ftp.example.com/f"), ("wget", "--ftp-user=alice", "--ftp-password", MASK, "ftp://ftp.example.com/f"), "wgetPW2", rule="secret-flag"),
    argv("wget --proxy-password=PW", ("wget", "--proxy-user=bob", "--proxy-password=wgetPW3", "https://example.com/f"), ("wget", "--proxy-user=bob", "--proxy-password=***", "https://example.com/f"), "wgetPW3", rule="secret-flag"),
    argv("plink -pw PW", ("plink", "-ssh", "-pw", "plinkPW1", "alice@host", "uptime"), ("plink", "-ssh", "-pw", MASK, "alice@host", "uptime"), "plinkPW1", rule="putty-password"),
    argv("mosquitto_pub -P PW", ("mosquitto_pub", "-h", "broker", "-u", "dev", "-P", "mqttPW1", "-t", "a/b", "-m", "1"), ("mosquitto_pub", "-h", "broker", "-u", "dev", "-P", MASK, "-t", "a/b", "-m", "1"), "mqttPW1", rule="mosquitto-password"),
    argv("mosquitto_sub --pw PW", ("mosquitto_sub", "-h", "broker", "--pw", "mqttPW2", "-t", "#"), ("mosquitto_sub", "-h", "broker", "--pw", MASK, "-t", "#"), "mqttPW2", rule="mosquitto-password"),
    argv("useradd -p HASH", ("useradd", "-m", "-p", "$6$salt$abcdefHASH", "bob"), ("useradd", "-m", "-p", MASK, "bob"), "abcdefHASH", rule="useradd-password"),
    argv("nmcli wifi connect password PW", ("nmcli", "device", "wifi", "connect", "HomeNet", "password", "wifiPW123"), ("nmcli", "device", "wifi", "connect", "HomeNet", "password", MASK), "wifiPW123", rule="nmcli-secret"),
    argv("nmcli wifi-sec.psk PW", ("nmcli", "connection", "modify", "HomeNet", "wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.psk", "wifiPW456"), ("nmcli", "connection", "modify", "HomeNet", "wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.psk", MASK), "wifiPW456", rule="nmcli-secret"),
    # --- argv: env -S, ansible ---------------------------------------------
    argv("env -S 'mysql -pPW'", ("env", "-S", "mysql -uroot -penvSPW1 appdb"), ("env", "-S", "mysql -uroot -p*** appdb"), "envSPW1", rule="shell-mysql-password"),
    argv("env -Smysql glued", ("/usr/bin/env", "-Smysql -uroot -penvSPW2 appdb"), ("/usr/bin/env", "-Smysql -uroot -p*** appdb"), "envSPW2", rule="shell-mysql-password"),
    argv("env --split-string=", ("env", "--split-string=mysqldump -uroot -penvSPW3 appdb"), ("env", "--split-string=mysqldump -uroot -p*** appdb"), "envSPW3", rule="shell-mysql-password"),
    argv("shebang env -S with --token", ("/usr/bin/env", "-S deploy --token envSTok1 --verbose", "./deploy.sh"), ("/usr/bin/env", "-S deploy --token *** --verbose", "./deploy.sh"), "envSTok1", rule="shell-secret-flag"),
    argv("env -S 'ldapsearch -w PW'", ("env", "-S", "ldapsearch -x -D cn=admin -w envSPW4 -b dc=x"), ("env", "-S", "ldapsearch -x -D cn=admin -w *** -b dc=x"), "envSPW4", rule="shell-tool-password"),
    argv("sh -c 'smbclient -U user%PW'", ("sh", "-c", "smbclient //fs1/s -U 'alice%shSmbPW' -c ls && echo ok"), ("sh", "-c", "smbclient //fs1/s -U '***' -c ls && echo ok"), "shSmbPW", rule="shell-tool-password"),
    argv("bash -c 'redis-cli -a PW'", ("bash", "-c", "redis-cli -h cache -a shRedisPW ping | grep PONG"), ("bash", "-c", "redis-cli -h cache -a *** ping | grep PONG"), "shRedisPW", rule="shell-tool-password"),
    argv("bash -c 'openssl enc -k PW'", ("bash", "-c", "openssl enc -d -aes256 -k shEncPW -in f.enc -kfile /dev/null"), ("bash", "-c", "openssl enc -d -aes256 -k *** -in f.enc -kfile /dev/null"), "shEncPW", rule="shell-tool-password"),
    argv("ansible --extra-vars JSON become_pass", ("ansible-playbook", "site.yml", "--extra-vars", '{"ansible_become_pass": "becomePW1", "env": "prod"}'), ("ansible-playbook", "site.yml", "--extra-vars", '{"ansible_become_pass": "***", "env": "prod"}'), "becomePW1", rule="json-secret-field"),
    argv("JSON camelCase and dotted names", ("curl", "-d", '{"clientSecret":"jsonKey1","db.password":"jsonPW2","csrf-token":"jsonTok3","name":"n"}', "https://api.example.com"), ("curl", "-d", '{"clientSecret":"***","db.password":"***","csrf-token":"***","name":"n"}', "https://api.example.com"), "jsonKey1", "jsonPW2", "jsonTok3", rule="json-secret-field"),
    argv("ansible -e ansible_password=", ("ansible", "all", "-e", "ansible_password=ansPW1", "-m", "ping"), ("ansible", "all", "-e", "ansible_password=***", "-m", "ping"), "ansPW1", rule="password-assignment"),
    argv("ansible -e key=value *_token / *_secret", ("ansible-playbook", "-e", "github_token=ansTok1 vault_secret=ansSec1 env=prod", "site.yml"), ("ansible-playbook", "-e", "github_token=*** vault_secret=*** env=prod", "site.yml"), "ansTok1", "ansSec1", rule="secret-assignment"),
    # --- argv: a secret flag last in a bundle of short options -------------
    argv("ldapsearch -xw PW", ("ldapsearch", "-xw", "ldapBndPW1", "-b", "dc=example,dc=org"), ("ldapsearch", "-xw", MASK, "-b", "dc=example,dc=org"), "ldapBndPW1", rule="ldap-password"),
    argv("ldapsearch -ZZxwPW glued", ("ldapsearch", "-H", "ldap://ldap1", "-ZZxwldapBndPW2", "(uid=bob)"), ("ldapsearch", "-H", "ldap://ldap1", "-ZZxw***", "(uid=bob)"), "ldapBndPW2", rule="ldap-password"),
    argv("ldappasswd -xa OLD -xsNEW", ("ldappasswd", "-xa", "oldBndPW3", "-xsnewBndPW4", "uid=bob,dc=x"), ("ldappasswd", "-xa", MASK, "-xs***", "uid=bob,dc=x"), "oldBndPW3", "newBndPW4", rule="ldappasswd-password"),
    argv("curl -su user:PW", ("curl", "-su", "bob:curlBndPW5", "https://example.com/api"), ("curl", "-su", MASK, "https://example.com/api"), "curlBndPW5", rule="curl-user"),
    argv("curl -ksuuser:PW glued", ("curl", "-ksubob:curlBndPW6", "https://example.com/api"), ("curl", "-ksu***", "https://example.com/api"), "curlBndPW6", rule="curl-user"),
    argv("curl -sb cookie", ("curl", "-sb", "session=curlBndCk7", "https://example.com"), ("curl", "-sb", MASK, "https://example.com"), "curlBndCk7", rule="curl-cookie"),
    argv("sshpass -vp PW", ("sshpass", "-vp", "sshBndPW8", "ssh", "deploy@10.0.0.5"), ("sshpass", "-vp", MASK, "ssh", "deploy@10.0.0.5"), "sshBndPW8", rule="sshpass-password"),
    argv("smbclient -NU user%PW", ("smbclient", "//fs1/share", "-NU", "alice%smbBndPW9"), ("smbclient", "//fs1/share", "-NU", MASK), "smbBndPW9", rule="samba-user"),
    argv("smbclient -NUuser%PW glued", ("smbclient", "//fs1/share", "-NUalice%smbBndPW10", "-c", "ls"), ("smbclient", "//fs1/share", "-NUalice%***", "-c", "ls"), "smbBndPW10", rule="samba-user"),
    argv("lftp -du user,PW", ("lftp", "-du", "alice,lftpBndPW11", "ftp.example.com"), ("lftp", "-du", MASK, "ftp.example.com"), "lftpBndPW11", rule="lftp-user"),
    argv("lftp -duuser,PW glued", ("lftp", "-dualice,lftpBndPW12", "ftp.example.com"), ("lftp", "-dualice,***", "ftp.example.com"), "lftpBndPW12", rule="lftp-user"),
    argv("mysql -BspPW", ("mysql", "-uroot", "-BspmyBndPW13", "appdb"), ("mysql", "-uroot", "-Bsp***", "appdb"), "myBndPW13", rule="mysql-password"),
    argv("zip -qrP PW", ("zip", "-qrP", "zipBndPW14", "out.zip", "dir"), ("zip", "-qrP", MASK, "out.zip", "dir"), "zipBndPW14", rule="zip-password"),
    argv("ssh-keygen -pP OLD -qN NEW", ("ssh-keygen", "-pP", "oldKgPW15", "-qN", "newKgPW16", "-f", "k"), ("ssh-keygen", "-pP", MASK, "-qN", MASK, "-f", "k"), "oldKgPW15", "newKgPW16", rule="ssh-keygen-passphrase"),
    argv("useradd -mp HASH", ("useradd", "-mp", "$6$salt$bndHASH17", "bob"), ("useradd", "-mp", MASK, "bob"), "bndHASH17", rule="useradd-password"),
    argv("http -va user:pass", ("http", "-va", "alice:httpBndPW18", "example.com/api"), ("http", "-va", MASK, "example.com/api"), "httpBndPW18", rule="httpie-auth"),
    argv("ipmitool -vP PW", ("ipmitool", "-H", "bmc1", "-U", "admin", "-vP", "ipmiBndPW19", "chassis", "status"), ("ipmitool", "-H", "bmc1", "-U", "admin", "-vP", MASK, "chassis", "status"), "ipmiBndPW19", rule="ipmitool-password"),
    argv("sh -c 'ldapsearch -xw PW; curl -su u:PW'", ("sh", "-c", "ldapsearch -xw shBndPW20 -b dc=x; curl -su bob:shBndPW21 https://h"), ("sh", "-c", "ldapsearch -xw *** -b dc=x; curl -su *** https://h"), "shBndPW20", "shBndPW21", rule="shell-curl-user"),
    argv("bash -c 'sshpass -vp PW'", ("bash", "-c", "sshpass -vp shBndPW22 ssh h uptime"), ("bash", "-c", "sshpass -vp *** ssh h uptime"), "shBndPW22", rule="shell-sshpass-password"),
    argv("sh -c 'smbclient -NU u%PW; lftp -du u,PW'", ("sh", "-c", "smbclient -NU alice%shBndPW23 //fs1/s -c ls; lftp -du bob,shBndPW24 h"), ("sh", "-c", "smbclient -NU *** //fs1/s -c ls; lftp -du *** h"), "shBndPW23", "shBndPW24", rule="shell-tool-password"),
    argv("bash -c 'mysql -BspPW'", ("bash", "-c", "mysql -uroot -BspshBndPW25 appdb < x.sql"), ("bash", "-c", "mysql -uroot -Bsp*** appdb < x.sql"), "shBndPW25", rule="shell-mysql-password"),
    # --- argv: secrets given by position -----------------------------------
    argv("htpasswd -b FILE USER PW", ("htpasswd", "-b", "/etc/nginx/.htpasswd", "alice", "htBPW1"), ("htpasswd", "-b", "/etc/nginx/.htpasswd", "alice", MASK), "htBPW1", rule="htpasswd-password"),
    argv("htpasswd -cbB FILE USER PW", ("sudo", "htpasswd", "-cbB", "/etc/apache2/.htpasswd", "bob", "htBPW2"), ("sudo", "htpasswd", "-cbB", "/etc/apache2/.htpasswd", "bob", MASK), "htBPW2", rule="htpasswd-password"),
    argv("htpasswd -nbB USER PW (no file)", ("htpasswd", "-nbB", "alice", "htNPW3"), ("htpasswd", "-nbB", "alice", MASK), "htNPW3", rule="htpasswd-password-nofile"),
    argv("htpasswd -b -n USER PW", ("htpasswd", "-b", "-n", "alice", "htNPW4"), ("htpasswd", "-b", "-n", "alice", MASK), "htNPW4", rule="htpasswd-password-nofile"),
    argv("rabbitmqctl add_user USER PW", ("rabbitmqctl", "add_user", "alice", "rmqPW1"), ("rabbitmqctl", "add_user", "alice", MASK), "rmqPW1", rule="rabbitmqctl-password"),
    argv("rabbitmqctl -n NODE change_password USER PW", ("rabbitmqctl", "-n", "rabbit@mq1", "change_password", "alice", "rmqPW2"), ("rabbitmqctl", "-n", "rabbit@mq1", "change_password", "alice", MASK), "rmqPW2", rule="rabbitmqctl-password"),
    argv("mc alias set NAME URL AK SK", ("mc", "alias", "set", "minio1", "https://minio.example.com", "AKIDMINIO1", "mcSecret1"), ("mc", "alias", "set", "minio1", "https://minio.example.com", "AKIDMINIO1", MASK), "mcSecret1", rule="mc-secret-key"),
    argv("mc config host add (later entries go too)", ("mc", "config", "host", "add", "minio1", "https://minio.example.com", "AKIDMINIO2", "mcSecret2", "--api", "S3v4"), ("mc", "config", "host", "add", "minio1", "https://minio.example.com", "AKIDMINIO2", MASK, MASK, MASK), "mcSecret2", rule="mc-secret-key"),
    argv("mc alias set --insecure (an option moves it earlier)", ("mc", "alias", "set", "--insecure", "minio1", "https://minio.example.com", "AKIDMINIO3", "mcSecret3"), ("mc", "alias", "set", "--insecure", "minio1", "https://minio.example.com", MASK, MASK), "mcSecret3", rule="mc-secret-key"),
    argv("mc admin user add TARGET USER PW", ("mc", "admin", "user", "add", "minio1", "bob", "mcUserPW4"), ("mc", "admin", "user", "add", "minio1", "bob", MASK), "mcUserPW4", rule="mc-user-password"),
    argv("vault login TOKEN", ("vault", "login", "s.legacyVaultTok1"), ("vault", "login", MASK), "s.legacyVaultTok1", rule="vault-login-token"),
    argv("vault login -address URL TOKEN (the option's value goes too)", ("vault", "login", "-no-print", "-address", "https://vault:8200", "s.legacyVaultTok2"), ("vault", "login", "-no-print", "-address", MASK, MASK), "s.legacyVaultTok2", rule="vault-login-token"),
    # --- argv: Python and YAML mappings ------------------------------------
    argv("ansible -e \"{'become_pass': 'PW'}\" (single quotes)", ("ansible-playbook", "-e", "{'ansible_become_pass': 'yamlPW1', 'env': 'prod'}", "site.yml"), ("ansible-playbook", "-e", "{'ansible_become_pass': '***', 'env': 'prod'}", "site.yml"), "yamlPW1", rule="single-quoted-secret-field"),
    argv("Python dict in python -c", ("python3", "-c", "connect(**{'password': 'pyPW2', 'host': 'db'})"), ("python3", "-c", "connect(**{'password': '***', 'host': 'db'})"), "pyPW2", rule="single-quoted-secret-field"),
    argv("JSON number and escaped quote", ("curl", "-d", '{"pin_password": 73190466285170931, "secret": "a\\"jsonEsc7"}', "https://api.example.com"), ("curl", "-d", '{"pin_password": ***, "secret": "***"}', "https://api.example.com"), "73190466285170931", "jsonEsc7", rule="json-secret-field"),
    argv("ansible -e '{become_pass: PW}' (YAML flow)", ("ansible-playbook", "-e", "{ansible_become_pass: yamlPW3, env: prod}", "site.yml"), ("ansible-playbook", "-e", "{ansible_become_pass: ***, env: prod}", "site.yml"), "yamlPW3", rule="yaml-secret-field"),
    argv("ansible --extra-vars 'password: PW' (YAML block)", ("ansible-playbook", "--extra-vars", "ansible_password: yaml PW4", "site.yml"), ("ansible-playbook", "--extra-vars", "ansible_password: ***", "site.yml"), "yaml PW4", rule="yaml-secret-field"),
    argv("ansible -e YAML document", ("ansible", "all", "-e", "---\nansible_ssh_pass: yamlPW5\nansible_user: deploy", "-m", "ping"), ("ansible", "all", "-e", "---\nansible_ssh_pass: ***\nansible_user: deploy", "-m", "ping"), "yamlPW5", rule="yaml-secret-field"),
    argv("ansible -e 'token: \"X\"' (YAML quoted)", ("ansible-playbook", "-e", 'vault_token: "yamlTok6"', "site.yml"), ("ansible-playbook", "-e", 'vault_token: "***"', "site.yml"), "yamlTok6", rule="yaml-secret-field"),
    argv("sh -c \"ansible-playbook -e 'become_pass: PW'\"", ("sh", "-c", "ansible-playbook -e 'ansible_become_pass: shYamlPW8' site.yml"), ("sh", "-c", "ansible-playbook -e 'ansible_become_pass: ***' site.yml"), "shYamlPW8", rule="shell-ansible-secret"),
    argv("bash -c 'ansible -e \"{password: PW}\"'", ("bash", "-c", 'ansible-playbook -e "{ansible_password: shYamlPW9, x: 1}" site.yml'), ("bash", "-c", 'ansible-playbook -e "{ansible_password: ***, x: 1}" site.yml'), "shYamlPW9", rule="shell-ansible-secret"),
    # --- paths -------------------------------------------------------------
    path("ghp_ in a path", f"/home/alice/.cache/tokens/{GHP}", dropped("github-token"), GHP, rule="github-token"),
    path("AWS key id in a file name", f"/tmp/upload-{AWS_KEY_ID}.json", dropped("aws-access-key-id"), AWS_KEY_ID, rule="aws-access-key-id"),
    path("JWT as a file name", f"/var/lib/app/sessions/{JWT}", dropped("jwt"), JWT, rule="jwt"),
    path("Slack token in a path", f"/tmp/{SLACK_TOKEN}-cache.json", dropped("slack-token"), SLACK_TOKEN, rule="slack-token"),
    path("query token in a path", "/srv/app/callback?token=pathTok1&v=2", "/srv/app/callback?token=***&v=2", "pathTok1", rule="query-secret"),
    path("Stripe key in a path", f"/mnt/backup/{STRIPE}.bak", dropped("stripe-secret-key"), STRIPE, rule="stripe-secret-key"),
    path("Hugging Face token in a path", f"/root/.cache/huggingface/{HF}", dropped("huggingface-token"), HF, rule="huggingface-token"),
    path("npm token in a path", f"/home/bob/.config/app/{NPM}.json", dropped("npm-token"), NPM, rule="npm-token"),
    path("env assignment in a path", "/run/user/1000/GITHUB_TOKEN=pathEnvTok", "/run/user/1000/GITHUB_TOKEN=***", "pathEnvTok", rule="env-secret-inline"),
    path("Slack webhook in a path", "/tmp/hooks.slack.com/services/T000/B000/XXXXXXXXXX", dropped("slack-webhook"), "XXXXXXXXXX", rule="slack-webhook"),
    path("private key header in a path", "/tmp/-----BEGIN RSA PRIVATE KEY-----", dropped("private-key-block"), "BEGIN RSA PRIVATE", rule="private-key-block"),
    # --- addresses ---------------------------------------------------------
    address("proxy URL with credentials", "http://proxyuser:proxyPW1@proxy.corp.example:3128", "http://proxy.corp.example:3128", "proxyPW1", "proxyuser", rule="url-userinfo"),
    address("redis URL, password only", "redis://:redisUrlPW@cache.internal:6379/0", "redis://cache.internal:6379/0", "redisUrlPW", rule="url-userinfo"),
    address("mongodb+srv URL", "mongodb+srv://app:mongoUrlPW@cluster0.example.net/db?retryWrites=true", "mongodb+srv://cluster0.example.net/db?retryWrites=true", "mongoUrlPW", rule="url-userinfo"),
    address("amqp URL", "amqp://guest:amqpPW1@rabbit.internal:5672/vhost", "amqp://rabbit.internal:5672/vhost", "amqpPW1", rule="url-userinfo"),
    address("password holding @", "https://user:p@ssW0rd@host.example/x", "https://host.example/x", "p@ssW0rd", "ssW0rd", rule="url-userinfo"),
    address("IPv6 host with credentials", "ftp://anon:ftpPW1@[2001:db8::1]:21/pub", "ftp://[2001:db8::1]:21/pub", "ftpPW1", rule="url-userinfo"),
    address("websocket ?token=", "wss://stream.example.com/ws?token=wsTok1&v=2", "wss://stream.example.com/ws?token=***&v=2", "wsTok1", rule="query-secret"),
    address("ghp_ in a UNIX socket path", f"unix:/run/user/1000/agent-{GHP}.sock", dropped("github-token"), GHP, rule="github-token"),
    address("JWT in an abstract socket name", f"unix:@/tmp/sess-{JWT}", dropped("jwt"), JWT, rule="jwt"),
    address("Slack webhook URL", SLACK_HOOK, dropped("slack-webhook"), "XXXXXXXXXXXXXXXXXXXXXXXX", rule="slack-webhook"),
)  # fmt: skip


def case_id(case: Case) -> str:
    return f"{case.kind}:{case.shape}"


def test_corpus_is_broad() -> None:
    """At least 30 distinct shapes, and each of argv, paths and addresses has several."""
    shapes = [case.shape for case in CORPUS]
    assert len(set(shapes)) == len(shapes), "shape names must be unique"
    assert len(shapes) >= 30
    for kind in ("argv", "path", "address"):
        assert sum(case.kind == kind for case in CORPUS) >= 8, kind


def test_every_builtin_rule_is_exercised() -> None:
    """A new built-in rule needs a corpus case, or it is untested (cut-only ones: below)."""
    assert {rule.name for rule in BUILTIN_RULES} == {case.rule for case in CORPUS} | {
        case.rule for case in CUT_CORPUS
    }


def test_expected_outputs_hold_no_secret() -> None:
    """The corpus itself is consistent: no expected output still holds a secret."""
    for case in CORPUS:
        rendered = "\n".join(case.expected) if isinstance(case.expected, tuple) else case.expected
        for secret in case.secrets:
            assert secret not in rendered, case_id(case)


def run(redactor: Redactor, case: Case) -> tuple[tuple[str, ...] | str, tuple[str, ...]]:
    if case.kind == "argv":
        assert isinstance(case.given, tuple)
        result = redactor.redact_argv(case.given)
        return result.argv, result.fired
    assert isinstance(case.given, str)
    detail = redactor.redact_text_detail(case.given, case.kind)
    return detail.text, detail.fired


@pytest.mark.parametrize("case", CORPUS, ids=case_id)
def test_secret_is_redacted(case: Case) -> None:
    redactor = Redactor.builtin()
    output, fired = run(redactor, case)
    rendered = "\n".join(output) if isinstance(output, tuple) else output
    for secret in case.secrets:
        assert secret not in rendered
    assert output == case.expected
    assert case.rule in fired
    assert redactor.stats.fields_redacted.get(case.rule, 0) >= 1
    assert redactor.stats.failures == {}


@pytest.mark.parametrize("case", CORPUS, ids=case_id)
def test_redacting_again_changes_nothing(case: Case) -> None:
    """Redacted output is a fixed point: markers and masks match no rule."""
    redactor = Redactor.builtin()
    if case.kind == "argv":
        assert isinstance(case.expected, tuple)
        assert redactor.redact_argv(case.expected).argv == case.expected
    else:
        assert isinstance(case.expected, str)
        assert redactor.redact_text(case.expected, case.kind) == case.expected


def test_redact_text_matches_detail() -> None:
    redactor = Redactor.builtin()
    for case in CORPUS:
        if isinstance(case.given, str):
            assert redactor.redact_text(case.given, case.kind) == case.expected


def test_same_input_same_output_across_redactors() -> None:
    first, second = Redactor.builtin(), Redactor.builtin()
    for case in CORPUS:
        assert run(first, case) == run(second, case)
        assert run(first, case) == run(first, case)


# --- fields the capture cut short ------------------------------------------------
#
# comm is cut at 15 bytes, argv entries at 127, paths at 255. A token cut there
# is shorter than its full rule's minimum, so only the cut-only rule (applied
# when the caller says the field was cut) catches what is left of it.

COMM_WIDTH, ARG_WIDTH, PATH_WIDTH = 15, 127, 255


def cut_field(head: str, token: str, width: int, keep: int) -> str:
    """``head``, padding, ``/`` and the first ``keep`` characters of ``token``: ``width`` in all."""
    value = head + "x" * (width - len(head) - 1 - keep) + "/" + token[:keep]
    assert len(value) == width
    return value


@dataclass(frozen=True)
class CutCase:
    shape: str
    kind: str  # "comm", "path", "address" or "argv" (then the entry at index 1 was cut)
    given: str
    rule: str
    secret: str  # what is left of the token; must not survive


def cut(shape: str, kind: str, given: str, rule: str, *, keep: int = 0) -> CutCase:
    """A case whose secret is the last ``keep`` characters of ``given`` (default: after the prefix)."""
    return CutCase(shape, kind, given, rule, given[-keep:] if keep else given)


CUT_CORPUS: tuple[CutCase, ...] = (
    cut("stripe key as an executable name", "comm", "sk_live_51QwErTyUiOpAsDfGhJkL"[:COMM_WIDTH], "stripe-secret-key-cut", keep=7),
    cut("ghp_ as a comm", "comm", GHP[:COMM_WIDTH], "github-token-cut", keep=11),
    cut("hf_ as a comm", "comm", HF[:COMM_WIDTH], "huggingface-token-cut", keep=12),
    cut("npm_ as a comm", "comm", NPM[:COMM_WIDTH], "npm-token-cut", keep=11),
    cut("glpat- as a comm", "comm", GLPAT[:COMM_WIDTH], "gitlab-token-cut", keep=9),
    cut("xoxb- in a cut path", "path", cut_field("/tmp/slack", SLACK_TOKEN, PATH_WIDTH, 12), "slack-token-cut", keep=7),
    cut("sk-proj- as a comm", "comm", OPENAI[:COMM_WIDTH], "openai-api-key-cut", keep=7),
    cut("sk-ant- as a comm", "comm", ANTHROPIC[:COMM_WIDTH], "anthropic-api-key-cut", keep=8),
    cut("dckr_pat_ as a comm", "comm", DOCKER_PAT[:COMM_WIDTH], "docker-hub-token-cut", keep=6),
    cut("pypi- as a comm", "comm", PYPI[:COMM_WIDTH], "pypi-token-cut", keep=6),
    cut("AKIA in a cut path", "path", cut_field("/tmp/upload-", AWS_KEY_ID, PATH_WIDTH, 10), "aws-access-key-id-cut", keep=10),
    cut("aws_secret_access_key= in a cut path", "path", cut_field("/etc/app/", f"aws_secret_access_key={AWS_SECRET}", PATH_WIDTH, 30), "aws-secret-access-key-cut", keep=8),
    cut("AIza in a cut path", "path", cut_field("/srv/keys/", GOOGLE_KEY, PATH_WIDTH, 12), "google-api-key-cut", keep=8),
    cut("ya29. in a cut path", "path", cut_field("/tmp/oauth/", GOOGLE_OAUTH, PATH_WIDTH, 9), "google-oauth-token-cut", keep=4),
    cut("GOCSPX- in a cut path", "path", cut_field("/tmp/", GOOGLE_CLIENT_SECRET, PATH_WIDTH, 12), "google-oauth-client-secret-cut", keep=5),
    cut("AccountKey= in a cut argv entry", "argv", "DefaultEndpointsProtocol=https;AccountName=acct;" + cut_field("EndpointSuffix=x;", f"AccountKey={AZURE_KEY}", ARG_WIDTH - 48, 16), "azure-storage-key-cut", keep=5),
    cut("dop_v1_ in a cut argv entry", "argv", cut_field("--config=/srv/do", DIGITALOCEAN, ARG_WIDTH, 20), "digitalocean-token-cut", keep=13),
    cut("hvs. in a cut path", "path", cut_field("/run/vault", VAULT, PATH_WIDTH, 12), "vault-token-cut", keep=8),
    cut("github_pat_ in a cut argv entry", "argv", cut_field("https://api.example.com/", GITHUB_PAT, ARG_WIDTH, 15), "github-fine-grained-pat-cut", keep=4),
    cut("Slack webhook cut in its path", "argv", cut_field("--url=https://x.example/", SLACK_HOOK.removeprefix("https://"), ARG_WIDTH, 30), "slack-webhook-cut", keep=5),
    cut("Discord webhook cut in its token", "address", cut_field("unix:/run/", DISCORD_HOOK.removeprefix("https://"), PATH_WIDTH, 48), "discord-webhook-cut", keep=4),
    cut("Telegram bot token cut", "argv", cut_field("--notify=https://api.telegram.org", f"bot{TELEGRAM}", ARG_WIDTH, 20), "telegram-bot-token-cut", keep=7),
    cut("whsec_ cut", "path", cut_field("/tmp/stripe", STRIPE_WHSEC, PATH_WIDTH, 12), "stripe-webhook-secret-cut", keep=6),
    cut("shpat_ cut", "argv", cut_field("--store=", SHOPIFY, ARG_WIDTH, 16), "shopify-token-cut", keep=10),
    cut("SendGrid key cut after its first part", "path", cut_field("/var/mail/", SENDGRID, PATH_WIDTH, 30), "sendgrid-api-key-cut", keep=8),
    cut("JWT cut in its header", "path", cut_field("/var/lib/app/sessions", JWT, PATH_WIDTH, 20), "jwt-cut", keep=17),
    cut("age key cut", "argv", cut_field("--identity-data=", AGE, ARG_WIDTH, 24), "age-secret-key-cut", keep=8),
)  # fmt: skip


def cut_id(case: CutCase) -> str:
    return f"{case.kind}:{case.shape}"


def run_cut(redactor: Redactor, case: CutCase, *, was_cut: bool) -> tuple[str, tuple[str, ...]]:
    """Redact the case's field, saying it was cut or not; the field's output and what fired."""
    if case.kind == "argv":
        result = redactor.redact_argv(("app", case.given, "next"), cut=(1,) if was_cut else ())
        assert result.argv[::2] == ("app", "next")
        return result.argv[1], result.fired
    detail = redactor.redact_text_detail(case.given, case.kind, cut=was_cut)
    return detail.text, detail.fired


def test_cut_corpus_names_every_cut_rule_once_per_shape() -> None:
    shapes = [case.shape for case in CUT_CORPUS]
    assert len(set(shapes)) == len(shapes)
    cut_rules = {rule.name for rule in BUILTIN_RULES if rule.only_when_cut}
    assert {case.rule for case in CUT_CORPUS} == cut_rules


@pytest.mark.parametrize("case", CUT_CORPUS, ids=cut_id)
def test_cut_token_is_dropped(case: CutCase) -> None:
    redactor = Redactor.builtin()
    text, fired = run_cut(redactor, case, was_cut=True)
    assert text == marker(case.rule)
    assert case.secret not in text
    assert fired == (case.rule,)
    assert redactor.stats.fields_redacted == {case.rule: 1}
    assert redactor.redact_text(text, case.kind, cut=True) == text


@pytest.mark.parametrize("case", CUT_CORPUS, ids=cut_id)
def test_the_same_field_uncut_is_left_to_the_full_rules(case: CutCase) -> None:
    """Too short for the full rule, so an uncut field is kept: cut-only rules never fire."""
    redactor = Redactor.builtin()
    text, fired = run_cut(redactor, case, was_cut=False)
    assert (text, fired) == (case.given, ())


def test_a_full_token_in_a_cut_field_keeps_its_own_rule() -> None:
    """The full-length rules are tried first: a cut field holding a whole token names it."""
    redactor = Redactor.builtin()
    value = cut_field("/tmp/", GHP + "-cache.json", PATH_WIDTH, len(GHP) + 3)
    assert redactor.redact_text(value, "path", cut=True) == marker("github-token")


def test_only_the_listed_argv_entries_are_cut() -> None:
    redactor = Redactor.builtin()
    argv = ("stripe-cli", "sk_live_51QwE", "sk_live_51QwE", "--x", "sk_test_9")
    result = redactor.redact_argv(argv, cut=[2, 4, 7, -1])
    assert result.argv == (
        "stripe-cli",
        "sk_live_51QwE",
        marker("stripe-secret-key-cut"),
        "--x",
        marker("stripe-secret-key-cut"),
    )
    assert result.fired == ("stripe-secret-key-cut",)
    assert redactor.stats.fields_redacted == {"stripe-secret-key-cut": 2}
    assert redactor.redact_argv(argv).argv == argv


def test_a_cut_token_must_run_to_the_end() -> None:
    """A short token-like word followed by more text was not cut: it is kept."""
    redactor = Redactor.builtin()
    for value in ("sk_live_51Q more", "ghp_x.json", "/tmp/hf_abcdef/x", "xoxb-1 "):
        assert redactor.redact_text(value, "path", cut=True) == value


def test_short_prefixes_need_a_few_characters() -> None:
    """hf_, npm_, AIza, eyJ: a cut path that merely ends in such a word is kept."""
    redactor = Redactor.builtin()
    for value in ("/srv/hf_ab", "/srv/npm_conf", "/x/AIza", "/x/eyJab", "/x/sk-abc"):
        assert redactor.redact_text(value, "path", cut=True) == value


def test_a_real_comm_cut_by_the_kernel_is_dropped(tmp_path: Path) -> None:
    """The kernel keeps 15 bytes of an executable's name as its comm: what capture reads."""
    name = "sk_live_51QwErTyUiOpAsDfGhJkL"
    program = tmp_path / name
    shutil.copy("/bin/sleep", program)
    with subprocess.Popen([str(program), "30"]) as child:
        try:
            comm = ""
            for _ in range(200):  # until exec has replaced the fork's comm
                comm = Path(f"/proc/{child.pid}/comm").read_text().rstrip("\n")
                if comm.startswith("sk_"):
                    break
                time.sleep(0.01)
        finally:
            child.kill()
    assert comm == name[:COMM_WIDTH]
    redactor = Redactor.builtin()
    was_cut = len(comm.encode("utf-8", "surrogateescape")) == COMM_WIDTH
    assert was_cut
    assert redactor.redact_text(comm, "comm") == comm  # too short for the full rule
    assert redactor.redact_text(comm, "comm", cut=was_cut) == marker("stripe-secret-key-cut")
