"""The built-in redaction rules: the secret shapes every deployment gets.

Order matters only within a class: forbidden rules are all tried first (the
first to match names the marker), then sensitive rules run one after another,
each on the output of the one before.

Speed: Python's ``re`` backtracks and has no time limit, so every pattern
here avoids nested quantifiers over the same characters, starts only where a
lookbehind allows, and bounds any scan that could restart at each of many
starting points (the JWT header, the distance from ``mysql`` to ``-p`` inside
a shell line). Worst cases grow with field length times that bound, and the
engine caps field length.

Choices that trade a little over-redaction for no leaks:

- ``--password VALUE`` masks the next argv entry even when the program treats
  the flag as a prompt (``mysql --password db`` loses ``db``);
- program-scoped rules (``sshpass -p``) apply to every entry after the
  program, including a wrapped command's (``sshpass -p X ssh -p 22`` masks
  ``22`` too);
- a ``login`` subcommand makes ``-p`` a password (``docker login -p X``);
- an argv entry that starts with ``NAME_TOKEN=`` is masked to its end, since
  ``env 'PGPASSWORD=two words' psql`` is one entry (``ssh h 'PGPASSWORD=x cmd'``
  loses ``cmd`` too);
- a flag's value as the next argv entry goes whole: ``smbclient -U user%PW``
  and ``lftp -u user,PW`` lose the user (glued, ``-Uuser%***`` keeps it), and
  ``openssl -passin env:VAR`` loses the variable's name;
- ``mount.cifs -o username=u,password=PW,vers=3.0`` loses the options after
  the password (``username=u,password=***``): a password may hold a comma;
- env is a shell here (its ``-S`` string is split like a shell line), so the
  shell-line rules apply to every entry after an ``env``;
- a program-scoped flag may end a getopt bundle of the program's options that
  take no value (``ldapsearch -xw PW``, ``curl -su u:PW``, ``smbclient -NU
  u%PW``); the letters allowed before it are listed per program, and a value
  of a flag outside the list that happens to spell a bundle is masked;
- secrets by position (``htpasswd -b f u PW``, ``rabbitmqctl add_user u PW``,
  ``mc alias set n URL AK SK``, ``vault login TOKEN``) take every entry after
  them too, and an option with a value between the trigger and the secret
  moves the masking earlier: ``htpasswd -b -C 10 f u pw`` loses ``u``, ``mc
  config host add ... SK --api S3v4`` loses ``--api S3v4``, and ``vault login
  -method=userpass username=u`` loses ``username=u``;
- a YAML key's plain value runs to the line's end (``password: a b # c`` loses
  the comment), to the next ``,`` ``}`` ``]`` after ``{`` or ``,``, and to a
  quote inside shell text.

Shapes deliberately left out, because they cannot be told from ordinary
arguments without far more false positives: bare high-entropy strings
(a 40-hex-digit token looks like a git commit id), ``user:pass@host``
without a URL scheme (looks like ``image:tag@sha256:...``), a generic ``-p``
(``mkdir -p``, ``ssh -p 22``), positional passwords whose position no option
or subcommand fixes (``smbclient //h/s PW``, ``isql dsn user PW``, ``net use
\\\\h\\s PW``), YAML ``key: value`` outside ansible's argv (``auth: fix
login`` is a commit message; inside shell text only ``ansible_*`` names are
looked for), and key material without its ``-----BEGIN`` line. Also not
caught: a URL password holding an unencoded ``/``, ``?`` or ``#``; a header
name and its value in two argv entries; flags named outside the word list
(``--pw``, ``--credentials``, ``twine -p``); a token cut shorter than its
cut-only rule's minimum (``hf_`` plus fewer than 4 characters), or cut in a
field the caller did not say was cut. Inside shell text, only the families
of ``shell-tool-password`` and the mysql, sshpass, curl and ansible rules are
looked for (not ``sqlplus u/PW``, ``xfreerdp /p:PW``, ``nmcli ... password
PW``, nor any secret by position). Bundles of short options are followed for
the getopt programs whose ``_NO_VALUE`` letters are listed below, not for
mongo, redis-cli, 7z, sqlcmd, docker login, openssl, smbtar, snmp, ncftp,
putty or mosquitto tools (their parsers take no bundles, or none is usual).
Add configured rules for local shapes.
"""

from __future__ import annotations

import re
from typing import Final

from agent.redact.rules import MASK, Rule

__all__ = ["BUILTIN_RULES"]


def _forbidden(name: str, pattern: str) -> Rule:
    return Rule(name=name, privacy="forbidden", pattern=pattern)


def _cut(name: str, pattern: str) -> Rule:
    """A forbidden rule for a cut field: ``pattern`` must run to the field's end."""
    return Rule(name=name, privacy="forbidden", pattern=pattern + r"\Z", only_when_cut=True)


def _sensitive(
    name: str,
    pattern: str,
    *,
    group: int | str = 1,
    replacement: str = MASK,
    next_arg: bool = False,
    programs: tuple[str, ...] = (),
) -> Rule:
    return Rule(
        name=name,
        privacy="sensitive",
        pattern=pattern,
        group=group,
        replacement=replacement,
        next_arg=next_arg,
        programs=programs,
    )


def _positional(name: str, trigger: str, nth: int, programs: tuple[str, ...]) -> Rule:
    """The ``nth`` positional entry after an entry matching ``trigger``, and all after it."""
    return Rule(name=name, privacy="sensitive", pattern=trigger, positional=nth, programs=programs)


def _bundled(no_value: str, flag: str, *, most: int | None = None) -> str:
    """A short ``flag`` (``w``, ``[as]``) alone or last in a getopt bundle.

    ``no_value`` lists the letters of the program's short options that take
    no value, which may come before the flag in one entry (``-xw``); a letter
    that takes one makes the rest of the entry its value (in ``-Dw``, ``w`` is
    ``-D``'s). ``most`` bounds the bundle, for patterns searched at many
    starting points (shell text); anchored argv patterns need no bound.
    """
    repeat = "*" if most is None else f"{{0,{most}}}"
    return f"-[{no_value}]{repeat}{flag}"


# Not preceded by a letter or digit: a token glued to a word is not a token,
# but one after "_", "/", "=" or ":" is.
_B: Final = r"(?<![A-Za-z0-9])"

# A value inside shell text, as capture group 1: the inside of a quoted string
# (maybe cut off by truncation), or a run up to whitespace, a quote or a shell
# operator. The quotes stay, so masking twice gives the same text.
_VALUE: Final = r"""["']?((?:(?<=")[^"]*|(?<=')[^']*|(?<!["'])[^\s'";&|]+))"""

# The last word of a flag that takes a secret: --password, --db-password,
# --api-key, --client_secret, -storepass (keytool), -passin (openssl).
_SECRET_WORD: Final = (
    r"(?:password|passwd|pass|passphrase|token|secret|api[-_]?key|access[-_]?key"
    r"|secret[-_]?key|client[-_]?secret|auth|bearer"
    r"|storepass|keypass|srcstorepass|deststorepass|srckeypass|destkeypass|passin|passout)"
)

# Flags that end in a secret word but are switches: --no-auth, --with-token.
_NOT_A_SWITCH: Final = (
    r"(?!(?:no|skip|disable|enable|require|use|with|without|ignore|prompt|ask"
    r"|check|verify|show|print|save|store|remember|forget|allow|deny|generate|gen)[-_])"
)

_FLAG: Final = rf"--?{_NOT_A_SWITCH}(?:[a-z0-9]+[-_.])*{_SECRET_WORD}"

# Upper-case environment names that hold secrets: PASSWORD, PGPASSWORD,
# DB_PASSWORD, GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY, MYSQL_PWD, REDISCLI_AUTH.
_ENV_NAME: Final = (
    r"(?:[A-Z][A-Z0-9]*_)*(?:[A-Z0-9]*PASSWORD|PASSWD|PASS|PWD|TOKEN|SECRET|KEY|APIKEY|AUTH)"
)

# Where a header name starts: an entry's start (curl -H), right after a glued
# -H, after a quote (sh -c, JSON), "=" (--header=, git -c
# http.extraHeader=), "," or ";". Not after "/":
# https://x-access-token:abc@host is userinfo, not a header.
_HEADER: Final = r"""(?:(?<![^\s'"=,;])|(?<=-H))"""
_HEADER_VALUE: Final = r"""["']?\s*:\s*\S"""

# Where a program name starts inside shell text: after a separator, an "="
# (env --split-string=mysql, CMD=mysql) or an "S" (env -Smysql). One
# character class: an alternation of lookbehinds here doubles these rules'
# cost on every shell line.
_CMD: Final = r"""(?<![^\s'"/;&|(=S])"""

# Programs whose arguments are shell text. env is one: its -S string (and a
# shebang's "#!/usr/bin/env -S cmd args", one argv entry) is split like a
# shell line, so the shell-line rules apply to what follows env.
_SHELLS: Final = (
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "busybox",
    "su", "runuser", "ssh", "watch", "env",
)  # fmt: skip

_MYSQL: Final = (
    "mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck",
    "mariadb", "mariadb-dump", "mariadb-admin",
)  # fmt: skip

_MONGO: Final = (
    "mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport",
    "mongostat", "mongotop",
)  # fmt: skip

# OpenLDAP clients: -w PW (or -wPW) is the bind password in all of them.
_LDAP: Final = (
    "ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldapmodrdn", "ldapcompare",
    "ldapwhoami", "ldapexop", "ldappasswd", "ldapvc",
)  # fmt: skip

# Samba clients taking -U user%PW (nmblookup's -U is an address: left out).
_SAMBA: Final = (
    "smbclient", "rpcclient", "smbcacls", "smbget", "smbtar", "net", "smbcquotas",
    "smbtree", "samba-tool", "winexe",
)  # fmt: skip

# Oracle clients taking user/PW@db as an argument.
_ORACLE: Final = (
    "sqlplus", "sqlldr", "expdp", "impdp", "exp", "imp", "rman", "dgmgrl",
)  # fmt: skip

_FREERDP: Final = (
    "xfreerdp", "xfreerdp3", "wlfreerdp", "wlfreerdp3", "sdl-freerdp", "sdl-freerdp3",
)  # fmt: skip

# Net-SNMP tools: -A auth pass, -X priv pass, -c community, -3m/-3M/-3k/-3K keys.
_SNMP: Final = (
    "snmpwalk", "snmpbulkwalk", "snmpget", "snmpgetnext", "snmpbulkget", "snmpset",
    "snmptable", "snmptrap", "snmpinform", "snmpdelta", "snmpdf", "snmpstatus",
    "snmptest", "snmpusm", "snmpvacm", "snmpnetstat",
)  # fmt: skip

_NCFTP: Final = ("ncftp", "ncftpget", "ncftpput", "ncftpls")
_PUTTY: Final = ("plink", "pscp", "psftp", "putty")
_MOSQUITTO: Final = ("mosquitto_pub", "mosquitto_sub", "mosquitto_rr")
_ZIP: Final = ("zip", "unzip", "zipcloak")
_ANSIBLE: Final = ("ansible", "ansible-playbook", "ansible-pull", "ansible-console")

# Short options that take no value, by program (family): what may come before
# a secret-taking flag in one getopt bundle (ldapsearch -xw PW, curl -su u:PW,
# smbclient -NU u%PW). A letter that takes a value in one of a family's
# programs is left out when its value could plausibly start with the flag's
# letter (ldapsearch -SwhenCreated, unzip -dProjects, mysql -Rprompt); the
# others are in: at worst they mask a value that was no secret.
_LDAP_NO_VALUE: Final = "AILMNQVWZacnrtuvx"
_LDAPPASSWD_NO_VALUE: Final = "AIMNQSVWZcnvx"
_CURL_NO_VALUE: Final = "#012346BGIJLMNORSVZafgijklnpqsv"
_SSHPASS_NO_VALUE: Final = "Vhv"
_SAMBA_NO_VALUE: Final = "BENPVegkq"
_LFTP_NO_VALUE: Final = "d"
_MYSQL_NO_VALUE: Final = "ABCEFNQVXcfnqstvx"
_ZIP_NO_VALUE: Final = "0-9@ACDFJKLMRSTUVXacefgjklmoqrtuvyz"
_HTTPIE_NO_VALUE: Final = "FISbcdfhjqvx"
_SSH_KEYGEN_NO_VALUE: Final = "ABHKLQUceghiklpquvy"
_USERADD_NO_VALUE: Final = "DLMNUamor"
_IPMITOOL_NO_VALUE: Final = "46EVYachv"

# The last word of a JSON or key=value field name that holds a secret, after
# "_", "-" or "." (ansible_become_pass, x-api-key, db.password): "bypass",
# "compass", "max_tokens" and "token_type" are not such names.
_KEY_SECRET_WORD: Final = (
    r"(?:password|passwd|pass|passphrase|pwd|secret|token|auth|api[-_]?key"
    r"|private[-_]?key|secret[-_]?key|access[-_]?key)"
)
# The same as the capitalised last word of a camelCase name (becomePassword, apiKey).
_CAMEL_SECRET_WORD: Final = (
    r"(?:Password|Passwd|Pass|Passphrase|Secret|Token|Auth|ApiKey|Apikey|PrivateKey"
    r"|SecretKey|AccessKey)"
)
_SECRET_KEY_NAME: Final = (
    rf"(?:(?i:(?:[a-z0-9]+[-_.])*{_KEY_SECRET_WORD})"
    rf"|[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*?{_CAMEL_SECRET_WORD})"
)

# A value after a JSON, Python or YAML flow key ("password": ..., {'pass': ...}),
# as group 1: a double-quoted string (escapes skipped, so \" does not end
# it), a single-quoted one, or a bare scalar (a number, a YAML plain value).
_FLOW_VALUE: Final = (
    r"""["']?((?:(?<=")[^"\\]*(?:\\[\s\S][^"\\]*)*|(?<=')[^']*"""
    r"""|(?<!["'])[^\s"',{}\[\]][^\s"',}\]]*))"""
)

# A YAML key's value, as group "value": quoted, or a plain scalar, which runs
# to the line's end after a block key ("password: two words") and to the next
# "," "}" or "]" after a flow key ({password: x, y: 1}); a key is a flow key
# when "{" or "," comes right before it (group "flow").
_YAML_KEY: Final = r"""(?:(?P<flow>[{,])\s*|(?<![^\s'"]))"""
_YAML_VALUE: Final = (
    r"""\s*:\s+["']?(?P<value>(?:(?<=")[^"\\]*(?:\\[\s\S][^"\\]*)*|(?<=')[^']*"""
    r"""|(?<!["'])(?(flow)[^,}\]\n]+|[^\n]+)))"""
)
# The same inside shell text, where a plain value also ends at a quote (the
# shell's: -e 'ansible_become_pass: PW' site.yml). The key is found by its
# literal start (re skips ahead to it: shell lines are many, and hardly any
# holds "ansible_"), so the text before it is looked at behind: "{" or ","
# right before it or one space before, group "flow" or "flow1".
_SHELL_ANSIBLE_KEY: Final = (
    r"""ansible_(?:(?<=(?P<flow>[{,])ansible_)|(?<=(?P<flow1>[{,])\sansible_)"""
    r"""|(?<![^\s'"]ansible_))"""
)
_SHELL_YAML_VALUE: Final = (
    r"""\s*:\s+["']?(?P<value>(?:(?<=")[^"\\]*(?:\\[\s\S][^"\\]*)*|(?<=')[^']*"""
    r"""|(?<!["'])(?(flow)[^,}\]\n'"]+|(?(flow1)[^,}\]\n'"]+|[^\n'"]+))))"""
)

# Inside shell text: a program of one of these families, then (within 512
# characters of the same command) its password flag; the value follows.
_SHELL_TOOL_FLAGS: Final = (
    (_LDAP, _bundled(_LDAP_NO_VALUE, "w", most=16) + r"\s*"),
    (("ldappasswd",), _bundled(_LDAPPASSWD_NO_VALUE, "[as]", most=16) + r"\s*"),
    (_SAMBA, rf"(?:{_bundled(_SAMBA_NO_VALUE, 'U', most=16)}\s*|--user(?:=|\s+))"),
    (("lftp", "open"), _bundled(_LFTP_NO_VALUE, "u", most=16) + r"\s*"),
    (("openssl",), r"-(?:k|K|hmac)\s+"),
    (("ipmitool",), _bundled(_IPMITOOL_NO_VALUE, "[Pky]", most=16) + r"\s*"),
    (_SNMP, r"-(?:[AXc]|3[mMkK])\s*"),
    (_NCFTP, r"-p\s*"),
    (_PUTTY, r"-pw\s+"),
    (_MOSQUITTO, r"(?:-P\s*|--pw\s+)"),
    (("redis-cli",), r"-a\s*"),
    (_MONGO, r"-p\s*"),
)
_SHELL_TOOL: Final = "|".join(
    rf"""(?:{"|".join(re.escape(name) for name in names)})(?=[\s'"])[^;&|\n]{{0,512}}?\s{flag}"""
    for names, flag in _SHELL_TOOL_FLAGS
)

_FORBIDDEN: Final = (
    # Key material and headers.
    _forbidden("private-key-block", r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY"),
    _forbidden("putty-private-key", r"PuTTY-User-Key-File-[0-9]"),
    _forbidden("age-secret-key", r"AGE-SECRET-KEY-1[0-9A-Z]{20,}"),
    _forbidden("authorization-header", rf"(?i){_HEADER}(?:proxy-)?authorization{_HEADER_VALUE}"),
    _forbidden(
        "api-key-header",
        rf"(?i){_HEADER}(?:x-api-key|api-key|apikey|x-auth-token|x-access-token"
        r"|private-token|job-token|deploy-token|x-vault-token|x-goog-api-key|x-auth-key"
        rf"|x-amz-security-token|ocp-apim-subscription-key|x-shopify-access-token){_HEADER_VALUE}",
    ),
    _forbidden("cookie-header", rf"(?i){_HEADER}(?:set-)?cookie{_HEADER_VALUE}"),
    # Cloud providers.
    _forbidden(
        "aws-access-key-id", r"(?<![A-Z0-9])(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}"
    ),
    _forbidden(
        "aws-secret-access-key",
        r"""(?i)aws_?secret_?(?:access_?)?key["']?\s*[=:]\s*["']?[A-Za-z0-9/+=]{16,}""",
    ),
    _forbidden("google-api-key", r"AIza[0-9A-Za-z_-]{30,}"),
    _forbidden("google-oauth-token", _B + r"ya29\.[0-9A-Za-z_-]{20,}"),
    _forbidden("google-oauth-client-secret", r"GOCSPX-[0-9A-Za-z_-]{20,}"),
    _forbidden("azure-storage-key", r"(?i)(?:AccountKey|SharedAccessKey)=[A-Za-z0-9+/]{20,}"),
    _forbidden("digitalocean-token", r"do[por]_v1_[a-f0-9]{40,}"),
    _forbidden("vault-token", _B + r"hv[sbr]\.[A-Za-z0-9_-]{20,}"),
    # Code hosting and package registries.
    _forbidden("github-token", r"gh[pousr]_[A-Za-z0-9]{20,}"),
    _forbidden("github-fine-grained-pat", r"github_pat_[A-Za-z0-9_]{20,}"),
    _forbidden("gitlab-token", r"gl(?:pat|dt|rt|ptt|cbt|oas)-[A-Za-z0-9_-]{16,}"),
    _forbidden("npm-token", r"npm_[A-Za-z0-9]{30,}"),
    _forbidden("pypi-token", r"pypi-AgEI[A-Za-z0-9_-]{20,}"),
    _forbidden("docker-hub-token", r"dckr_pat_[A-Za-z0-9_-]{20,}"),
    _forbidden("huggingface-token", _B + r"hf_[A-Za-z0-9]{30,}"),
    # Chat, payments, mail, AI APIs.
    _forbidden("slack-token", r"(?:xox[abprs]|xapp)-[A-Za-z0-9-]{10,}"),
    _forbidden(
        "slack-webhook", r"(?i)hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{8,}"
    ),
    _forbidden(
        "discord-webhook", r"(?i)discord(?:app)?\.com/api/webhooks/[0-9]+/[A-Za-z0-9_-]{8,}"
    ),
    _forbidden("telegram-bot-token", r"(?<![0-9])[0-9]{8,10}:AA[A-Za-z0-9_-]{30,}"),
    _forbidden("stripe-secret-key", _B + r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,}"),
    _forbidden("stripe-webhook-secret", r"whsec_[A-Za-z0-9]{20,}"),
    _forbidden("shopify-token", r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"),
    _forbidden("twilio-api-key", _B + r"SK[0-9a-fA-F]{32}(?![0-9a-fA-F])"),
    _forbidden("sendgrid-api-key", _B + r"SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"),
    _forbidden("mailgun-api-key", _B + r"key-[0-9a-f]{32}(?![0-9a-f])"),
    _forbidden("anthropic-api-key", _B + r"sk-ant-[A-Za-z0-9_-]{20,}"),
    _forbidden("openai-api-key", _B + r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    # Signed tokens: a JWT's payload is readable by anyone who sees it.
    _forbidden("jwt", r"eyJ[A-Za-z0-9_-]{8,2048}\.[A-Za-z0-9_-]{4}"),
)

# Tokens the capture cut short: a known prefix that runs to the field's end,
# where the cut happened (comm at 15 bytes: an executable named
# sk_live_51QwErTyUiOpAsDfGhJkL has comm sk_live_51QwErT). These apply only to
# a field the caller says was cut; the minimum after the prefix is 0 for
# prefixes no ordinary word has, a few characters for short ones ("hf_",
# "npm_", "AIza") so a cut path ending in a short word is not taken for one.
_CUT: Final = (
    _cut("aws-access-key-id-cut", r"(?<![A-Z0-9])(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{4,}"),
    _cut(
        "aws-secret-access-key-cut",
        r"""(?i)aws_?secret_?(?:access_?)?key["']?\s*[=:]\s*["']?[A-Za-z0-9/+=]*""",
    ),
    _cut("google-api-key-cut", _B + r"AIza[0-9A-Za-z_-]{4,}"),
    _cut("google-oauth-token-cut", _B + r"ya29\.[0-9A-Za-z_-]*"),
    _cut("google-oauth-client-secret-cut", r"GOCSPX-[0-9A-Za-z_-]*"),
    _cut("azure-storage-key-cut", r"(?i)(?:AccountKey|SharedAccessKey)=[A-Za-z0-9+/]*"),
    _cut("digitalocean-token-cut", r"do[por]_v1_[a-f0-9]*"),
    _cut("vault-token-cut", _B + r"hv[sbr]\.[A-Za-z0-9_-]{4,}"),
    _cut("github-token-cut", _B + r"gh[pousr]_[A-Za-z0-9]*"),
    _cut("github-fine-grained-pat-cut", r"github_pat_[A-Za-z0-9_]*"),
    _cut("gitlab-token-cut", _B + r"gl(?:pat|dt|rt|ptt|cbt|oas)-[A-Za-z0-9_-]*"),
    _cut("npm-token-cut", _B + r"npm_[A-Za-z0-9]{6,}"),
    _cut("pypi-token-cut", r"pypi-AgEI[A-Za-z0-9_-]*"),
    _cut("docker-hub-token-cut", r"dckr_pat_[A-Za-z0-9_-]*"),
    _cut("huggingface-token-cut", _B + r"hf_[A-Za-z0-9]{4,}"),
    _cut("slack-token-cut", r"(?:xox[abprs]|xapp)-[A-Za-z0-9-]*"),
    _cut(
        "slack-webhook-cut",
        r"(?i)hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]*",
    ),
    _cut("discord-webhook-cut", r"(?i)discord(?:app)?\.com/api/webhooks/[0-9]+/[A-Za-z0-9_-]*"),
    _cut("telegram-bot-token-cut", r"(?<![0-9])[0-9]{8,10}:AA[A-Za-z0-9_-]*"),
    _cut("stripe-secret-key-cut", _B + r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]*"),
    _cut("stripe-webhook-secret-cut", r"whsec_[A-Za-z0-9]*"),
    _cut("shopify-token-cut", r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]*"),
    _cut("sendgrid-api-key-cut", _B + r"SG\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?"),
    _cut("anthropic-api-key-cut", _B + r"sk-ant-[A-Za-z0-9_-]*"),
    _cut(
        "openai-api-key-cut",
        _B + r"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]*|[A-Za-z0-9_-]{8,})",
    ),
    # A JWT cut inside its header (once a "." and 4 characters are in, the
    # full rule has it).
    _cut("jwt-cut", _B + r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]{0,3})?"),
    _cut("age-secret-key-cut", r"AGE-SECRET-KEY-1[0-9A-Z]*"),
)

_SENSITIVE: Final = (
    # --password=VALUE, or --password VALUE across two argv entries.
    _sensitive(
        "secret-flag", rf"(?is)\A{_FLAG}(?:=(?P<value>.*))?\Z", group="value", next_arg=True
    ),
    # PASSWORD=VALUE as a whole argv entry (env, docker -e): the value may hold spaces.
    _sensitive("env-secret", rf"(?s)\A{_ENV_NAME}=(.+)\Z"),
    # The same inside longer text: --env=GITHUB_TOKEN=x, sh -c 'TOKEN=x cmd'.
    _sensitive("env-secret-inline", rf"(?<![A-Za-z0-9_]){_ENV_NAME}={_VALUE}"),
    _sensitive("secret-flag-inline", rf"""(?i)(?<![^\s'"]){_FLAG}={_VALUE}"""),
    # password=x in conninfo, JDBC, ODBC (PWD=), -Dx.keyStorePassword=, form bodies.
    _sensitive(
        "password-assignment",
        rf"(?i)(?:password|passwd|passphrase|(?<![a-z0-9])(?:pass|pwd))\s*=\s*{_VALUE}",
    ),
    # token=x, api_key=x&page=2, github_token=x (httpie, curl -d, ansible -e).
    _sensitive(
        "secret-assignment",
        r"(?i)(?<![a-z0-9_.?&;-])(?:[a-z0-9]+[-_.])*(?:token|secret|api[-_]?key|apikey"
        rf"|private[-_]?key|secret[-_]?key)\s*=\s*{_VALUE}",
    ),
    # aws configure set aws_secret_access_key VALUE
    _sensitive(
        "aws-configure-secret",
        r"(?is)\A(?:aws_secret_access_key|aws_session_token)(?:=(?P<value>.*))?\Z",
        group="value",
        next_arg=True,
        programs=("aws",),
    ),
    # ssh-keygen -N new-passphrase / -P old-passphrase
    _sensitive(
        "ssh-keygen-passphrase",
        rf"(?s)\A{_bundled(_SSH_KEYGEN_NO_VALUE, '[NP]')}(.+)?\Z",
        next_arg=True,
        programs=("ssh-keygen",),
    ),
    # {"password": "x"} in a JSON body (curl -d), {"ansible_become_pass": "x"}
    # (ansible --extra-vars), {"apiKey": "x"}: any name ending in a secret word.
    _sensitive("json-secret-field", rf'"{_SECRET_KEY_NAME}"\s*:\s*{_FLOW_VALUE}'),
    # The same with single quotes: {'password': 'x'} (Python, YAML flow). A
    # rule of its own: a pattern that starts with one literal character is
    # searched for far faster than one that starts with a choice of two.
    _sensitive("single-quoted-secret-field", rf"'{_SECRET_KEY_NAME}'\s*:\s*{_FLOW_VALUE}"),
    # ansible -e 'ansible_become_pass: x', -e '{db_password: x}': YAML keys,
    # unquoted. Only for ansible: elsewhere "auth: fix the login" is a commit
    # message.
    _sensitive(
        "yaml-secret-field",
        rf"{_YAML_KEY}{_SECRET_KEY_NAME}{_YAML_VALUE}",
        group="value",
        programs=_ANSIBLE,
    ),
    # scheme://user:pass@host: the credentials go, the rest of the URL stays.
    _sensitive(
        "url-userinfo",
        r"""(?i)(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://([^\s/?#@:'"]*:[^\s/?#'"]*@)""",
        replacement="",
    ),
    # ?token=x&page=2: the value goes, the parameter name stays.
    _sensitive(
        "query-secret",
        r"""(?i)[?&;](?:access_token|refresh_token|id_token|auth_token|private_token|token"""
        r"""|api_key|apikey|api-key|key|sig|signature|password|passwd|pwd|secret"""
        r"""|client_secret|session|sessionid|jwt|x-amz-signature|x-amz-security-token"""
        r"""|x-amz-credential|x-goog-signature|x-goog-credential)=([^&#\s'"]*)""",
    ),
    # Program-specific flags whose meaning elsewhere is harmless.
    # Flags that may end a bundle of short options (-xw PW) are _bundled.
    _sensitive(
        "mysql-password",
        rf"(?s)\A{_bundled(_MYSQL_NO_VALUE, 'p')}(.+)\Z",
        programs=_MYSQL,
    ),
    _sensitive(
        "sshpass-password",
        rf"(?s)\A{_bundled(_SSHPASS_NO_VALUE, 'p')}(.+)?\Z",
        next_arg=True,
        programs=("sshpass",),
    ),
    _sensitive("mongo-password", r"(?s)\A-p(.+)?\Z", next_arg=True, programs=_MONGO),
    _sensitive("redis-cli-password", r"(?s)\A-a(.+)?\Z", next_arg=True, programs=("redis-cli",)),
    _sensitive(
        "zip-password",
        rf"(?s)\A{_bundled(_ZIP_NO_VALUE, 'P')}(.+)?\Z",
        next_arg=True,
        programs=_ZIP,
    ),
    _sensitive(
        "archive-password",
        r"(?s)\A-p(.+)\Z",
        programs=("7z", "7za", "7zr", "7zz", "rar", "unrar"),
    ),
    _sensitive(
        "sqlcmd-password", r"(?s)\A-P(.+)?\Z", next_arg=True, programs=("sqlcmd", "bcp", "osql")
    ),
    _sensitive(
        "curl-user",
        rf"(?s)\A(?:{_bundled(_CURL_NO_VALUE, '[uU]')}|--(?:proxy-)?user(?==|\Z)=?)(.+)?\Z",
        next_arg=True,
        programs=("curl",),
    ),
    _sensitive(
        "curl-cookie",
        rf"(?s)\A(?:{_bundled(_CURL_NO_VALUE, 'b')}|--cookie(?==|\Z)=?)(.+)?\Z",
        next_arg=True,
        programs=("curl",),
    ),
    _sensitive(
        "httpie-auth",
        rf"(?s)\A{_bundled(_HTTPIE_NO_VALUE, 'a')}(.+)?\Z",
        next_arg=True,
        programs=("http", "https", "httpie"),
    ),
    _sensitive("login-password", r"(?s)\A-p(.+)?\Z", next_arg=True, programs=("login",)),
    # openssl enc -k PW, -K hexkey, dgst -hmac KEY (-kfile is a file: kept;
    # -pass/-passin/-passout are secret-flag's, every form of their value).
    _sensitive(
        "openssl-key", r"(?s)\A-(?:k|K|hmac)(?:=(.*))?\Z", next_arg=True, programs=("openssl",)
    ),
    _sensitive(
        "ldap-password",
        rf"(?s)\A{_bundled(_LDAP_NO_VALUE, 'w')}(.+)?\Z",
        next_arg=True,
        programs=_LDAP,
    ),
    # ldappasswd -a OLDPW -s NEWPW (to ldapsearch, -a is deref and -s scope).
    _sensitive(
        "ldappasswd-password",
        rf"(?s)\A{_bundled(_LDAPPASSWD_NO_VALUE, '[as]')}(.+)?\Z",
        next_arg=True,
        programs=("ldappasswd",),
    ),
    # -U user%PW: glued, the user stays; as the next entry, all of it goes.
    _sensitive(
        "samba-user",
        rf"(?s)\A(?:{_bundled(_SAMBA_NO_VALUE, 'U')}|--user(?==|\Z)=?)(?:[^%]*%(.+)|\Z)",
        next_arg=True,
        programs=_SAMBA,
    ),
    _sensitive("smbtar-password", r"(?s)\A-p(.+)?\Z", next_arg=True, programs=("smbtar",)),
    # lftp -u user,PW: glued, the user stays; as the next entry, all of it goes.
    _sensitive(
        "lftp-user",
        rf"(?s)\A{_bundled(_LFTP_NO_VALUE, 'u')}(?:[^,]*,(.+)|\Z)",
        next_arg=True,
        programs=("lftp",),
    ),
    # sqlplus scott/PW@db, sqlldr userid=scott/PW, rman target sys/PW@db.
    _sensitive(
        "oracle-password",
        r"""(?s)\A(?:(?i:userid|target|catalog|auxiliary)=)?[^\s/@="'.~-][^\s/@="']*/"""
        r"""("[^"]*"|[^\s@"]+)""",
        programs=_ORACLE,
    ),
    # xfreerdp /p:PW, /gp:PW (gateway), /pth:HASH.
    _sensitive("freerdp-password", r"(?s)\A[/-](?:p|gp|pth):(.+)\Z", programs=_FREERDP),
    _sensitive(
        "ipmitool-password",
        rf"(?s)\A{_bundled(_IPMITOOL_NO_VALUE, '[Pky]')}(.+)?\Z",
        next_arg=True,
        programs=("ipmitool",),
    ),
    _sensitive("snmp-secret", r"(?s)\A-(?:[AXc]|3[mMkK])(.+)?\Z", next_arg=True, programs=_SNMP),
    _sensitive("ncftp-password", r"(?s)\A-p(.+)?\Z", next_arg=True, programs=_NCFTP),
    _sensitive("putty-password", r"(?s)\A-pw(?:=(.*))?\Z", next_arg=True, programs=_PUTTY),
    _sensitive(
        "mosquitto-password",
        r"(?s)\A(?:--pw|-P(.+)?)\Z",
        next_arg=True,
        programs=_MOSQUITTO,
    ),
    # useradd/usermod -p HASH: a crypt hash, crackable offline.
    _sensitive(
        "useradd-password",
        rf"(?s)\A{_bundled(_USERADD_NO_VALUE, 'p')}(.+)?\Z",
        next_arg=True,
        programs=("useradd", "usermod"),
    ),
    # nmcli dev wifi connect NET password PW; nmcli con modify X wifi-sec.psk PW.
    _sensitive(
        "nmcli-secret",
        r"(?s)\A(?:password|(?:wifi-sec|802-11-wireless-security|802-1x|pppoe|gsm|cdma"
        r"|wireguard)\.(?:psk|password|private-key-password|phase2-private-key-password"
        r"|leap-password|wep-key[0-3]|pin|private-key))(?:=(.*))?\Z",
        next_arg=True,
        programs=("nmcli",),
    ),
    # Secrets given by position: the trigger entry stays, the Nth positional
    # entry after it and every later one go (see Rule.positional).
    # htpasswd -b FILE USER PW, htpasswd -nb USER PW (-n: no file). htpasswd
    # takes its options first, so counting from -b (or -n) is exact, but for
    # a value-taking -C/-r between them (htpasswd -b -C 10 f u pw loses u).
    _positional("htpasswd-password", r"\A-[2-5BDcdimnpsv]*b", 3, ("htpasswd",)),
    _positional("htpasswd-password-nofile", r"\A-[2-5BDbcdimpsv]*n", 2, ("htpasswd",)),
    # rabbitmqctl add_user USER PW, change_password USER PW, authenticate_user USER PW.
    _positional(
        "rabbitmqctl-password",
        r"\A(?:add_user|change_password|authenticate_user)\Z",
        2,
        ("rabbitmqctl",),
    ),
    # mc alias set NAME URL ACCESSKEY SECRETKEY (and the older mc config host
    # add NAME URL ...): counted from "alias"/"host", the secret key is 5th.
    _positional("mc-secret-key", r"\A(?:alias|host)\Z", 5, ("mc", "mcli")),
    # mc admin user add TARGET USER PASSWORD.
    _positional("mc-user-password", r"\Auser\Z", 4, ("mc", "mcli")),
    # vault login TOKEN (vault login -method=userpass username=u loses u too).
    _positional("vault-login-token", r"\Alogin\Z", 1, ("vault", "bao")),
    # The same flags inside a shell command line (sh -c '...', ssh host '...').
    _sensitive(
        "shell-secret-flag",
        rf"""(?i)(?<![^\s'"]){_FLAG}(?:=|\s+){_VALUE}""",
        programs=_SHELLS,
    ),
    _sensitive(
        "shell-mysql-password",
        rf"{_CMD}(?:{'|'.join(_MYSQL)})(?=[\s'\"])[^;&|\n]{{0,512}}?"
        rf"\s{_bundled(_MYSQL_NO_VALUE, 'p', most=16)}{_VALUE}",
        programs=_SHELLS,
    ),
    _sensitive(
        "shell-sshpass-password",
        rf"{_CMD}sshpass\s+(?:\S+\s+){{0,16}}?{_bundled(_SSHPASS_NO_VALUE, 'p', most=8)}\s*{_VALUE}",
        programs=_SHELLS,
    ),
    _sensitive(
        "shell-curl-user",
        rf"{_CMD}curl\s(?:[^;&|\n]{{0,1024}}?\s)?"
        rf"(?:{_bundled(_CURL_NO_VALUE, '[uU]', most=16)}\s*|--(?:proxy-)?user(?:\s+|=)){_VALUE}",
        programs=_SHELLS,
    ),
    # ansible_become_pass: x, {ansible_password: x} (YAML) inside shell text:
    # only ansible's own variable names, which no commit message holds.
    _sensitive(
        "shell-ansible-secret",
        rf"{_SHELL_ANSIBLE_KEY}[a-z0-9_]*?(?:pass|password|passwd|passphrase|secret|token)"
        rf"{_SHELL_YAML_VALUE}",
        group="value",
        programs=_SHELLS,
    ),
    # ldapsearch -w, smbclient -U, lftp -u, openssl -k ... inside shell text
    # (and lftp's own -c/-e command text: open -u user,PW).
    _sensitive(
        "shell-tool-password",
        rf"{_CMD}(?:{_SHELL_TOOL}){_VALUE}",
        programs=(*_SHELLS, "lftp"),
    ),
)

BUILTIN_RULES: Final[tuple[Rule, ...]] = _FORBIDDEN + _CUT + _SENSITIVE
"""Every built-in rule, forbidden ones first (the cut-only ones last of them).
Names are unique."""
