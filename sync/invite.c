/* sync/invite: the join token's text form; see invite.h for the format. */
#include "sync/invite.h"

#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdbool.h>
#include <string.h>

#define INVITE_VERSION 1
#define CHECKSUM_LEN   4
/* version, ids and keys, three length bytes, the longest texts, the checksum */
#define RAW_MAX                                                                                    \
    (1 + SYNC_SHARE_ID_LEN + SYNC_KEY_LEN + SYNC_SEED_LEN + 2 * SYNC_PUBLIC_KEY_LEN + 4 +          \
     2 * SYNC_INVITE_ADDR_MAX + 2 * SYNC_INVITE_NAME_MAX + CHECKSUM_LEN)

_Static_assert(sizeof(SYNC_INVITE_PREFIX) - 1 + (RAW_MAX + 2) / 3 * 4 < SYNC_INVITE_TEXT_MAX,
               "the longest token fits its text");

static bool text_ok(const char *text, size_t max)
{
    size_t len = strnlen(text, max + 1);
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
            return false;
    return true;
}

static void put_text(uint8_t *raw, size_t *at, const char *text)
{
    size_t len = strlen(text);
    raw[(*at)++] = (uint8_t)len;
    memcpy(raw + *at, text, len);
    *at += len;
}

int sync_invite_encode(char *out, size_t cap, const struct sync_invite *invite)
{
    if (!text_ok(invite->relay_addr, SYNC_INVITE_ADDR_MAX) ||
        !text_ok(invite->share_name, SYNC_INVITE_NAME_MAX) ||
        !text_ok(invite->device_name, SYNC_INVITE_NAME_MAX) ||
        !text_ok(invite->inviter_name, SYNC_INVITE_ADDR_MAX))
        return -EINVAL;
    uint8_t raw[RAW_MAX];
    size_t at = 0;
    raw[at++] = INVITE_VERSION;
    memcpy(raw + at, invite->share_id, SYNC_SHARE_ID_LEN);
    at += SYNC_SHARE_ID_LEN;
    memcpy(raw + at, invite->share_key, SYNC_KEY_LEN);
    at += SYNC_KEY_LEN;
    memcpy(raw + at, invite->device_seed, SYNC_SEED_LEN);
    at += SYNC_SEED_LEN;
    memcpy(raw + at, invite->inviter_key, SYNC_PUBLIC_KEY_LEN);
    at += SYNC_PUBLIC_KEY_LEN;
    memcpy(raw + at, invite->relay_key, SYNC_PUBLIC_KEY_LEN);
    at += SYNC_PUBLIC_KEY_LEN;
    put_text(raw, &at, invite->relay_addr);
    put_text(raw, &at, invite->share_name);
    put_text(raw, &at, invite->device_name);
    put_text(raw, &at, invite->inviter_name);
    uint8_t sum[32];
    crypto_generichash(sum, sizeof(sum), raw, at, NULL, 0);
    memcpy(raw + at, sum, CHECKSUM_LEN);
    at += CHECKSUM_LEN;
    size_t prefix = strlen(SYNC_INVITE_PREFIX);
    size_t need = prefix + sodium_base64_ENCODED_LEN(at, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    int rc = 0;
    if (cap < need)
        rc = -ENOSPC;
    else {
        memcpy(out, SYNC_INVITE_PREFIX, prefix);
        sodium_bin2base64(out + prefix, cap - prefix, raw, at,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    }
    sodium_memzero(raw, sizeof(raw));
    return rc;
}

/* Reads a length-prefixed text of 1..max bytes into out (NUL-terminated). */
static int get_text(char *out, size_t max, const uint8_t *raw, size_t len, size_t *at)
{
    if (*at >= len)
        return -EBADMSG;
    size_t n = raw[(*at)++];
    if (n == 0 || n > max || n > len - *at)
        return -EBADMSG;
    memcpy(out, raw + *at, n);
    out[n] = '\0';
    *at += n;
    return text_ok(out, max) ? 0 : -EBADMSG;
}

int sync_invite_decode(struct sync_invite *out, const char *text)
{
    memset(out, 0, sizeof(*out));
    while (isspace((unsigned char)*text))
        text++;
    size_t prefix = strlen(SYNC_INVITE_PREFIX);
    if (strncmp(text, SYNC_INVITE_PREFIX, prefix) != 0)
        return -EBADMSG;
    text += prefix;
    size_t text_len = strlen(text);
    while (text_len && isspace((unsigned char)text[text_len - 1]))
        text_len--;
    uint8_t raw[RAW_MAX + 3];
    size_t len = 0;
    const char *end = NULL;
    if (sodium_base642bin(raw, sizeof(raw), text, text_len, NULL, &len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != text + text_len)
        return -EBADMSG;
    int rc = 0;
    if (len < 1 + CHECKSUM_LEN)
        rc = -EBADMSG;
    uint8_t sum[32];
    if (!rc) {
        crypto_generichash(sum, sizeof(sum), raw, len - CHECKSUM_LEN, NULL, 0);
        if (sodium_memcmp(sum, raw + len - CHECKSUM_LEN, CHECKSUM_LEN) != 0)
            rc = -EILSEQ;
    }
    if (!rc && raw[0] != INVITE_VERSION)
        rc = -EPROTONOSUPPORT;
    size_t body = len - CHECKSUM_LEN, at = 1;
    size_t fixed = SYNC_SHARE_ID_LEN + SYNC_KEY_LEN + SYNC_SEED_LEN + 2 * SYNC_PUBLIC_KEY_LEN;
    if (!rc && body < at + fixed)
        rc = -EBADMSG;
    if (!rc) {
        memcpy(out->share_id, raw + at, SYNC_SHARE_ID_LEN);
        at += SYNC_SHARE_ID_LEN;
        memcpy(out->share_key, raw + at, SYNC_KEY_LEN);
        at += SYNC_KEY_LEN;
        memcpy(out->device_seed, raw + at, SYNC_SEED_LEN);
        at += SYNC_SEED_LEN;
        memcpy(out->inviter_key, raw + at, SYNC_PUBLIC_KEY_LEN);
        at += SYNC_PUBLIC_KEY_LEN;
        memcpy(out->relay_key, raw + at, SYNC_PUBLIC_KEY_LEN);
        at += SYNC_PUBLIC_KEY_LEN;
        rc = get_text(out->relay_addr, SYNC_INVITE_ADDR_MAX, raw, body, &at);
    }
    if (!rc)
        rc = get_text(out->share_name, SYNC_INVITE_NAME_MAX, raw, body, &at);
    if (!rc)
        rc = get_text(out->device_name, SYNC_INVITE_NAME_MAX, raw, body, &at);
    if (!rc)
        rc = get_text(out->inviter_name, SYNC_INVITE_ADDR_MAX, raw, body, &at);
    if (!rc && at != body)
        rc = -EBADMSG;
    sodium_memzero(raw, sizeof(raw));
    if (rc)
        sync_invite_wipe(out);
    return rc;
}

void sync_invite_wipe(struct sync_invite *invite)
{
    sodium_memzero(invite, sizeof(*invite));
}
