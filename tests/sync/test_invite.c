/*
 * test-sync-invite: join tokens. Round trips; a typo anywhere is caught by
 * the checksum; cut tokens, other prefixes, later versions and bad names are
 * refused; whitespace around a pasted token is fine; secrets are wiped.
 */
#include "sync/invite.h"

#include "test.h"

#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

static struct sync_invite sample(void)
{
    struct sync_invite invite;
    memset(&invite, 0, sizeof(invite));
    for (int i = 0; i < SYNC_SHARE_ID_LEN; i++)
        invite.share_id[i] = (uint8_t)i;
    for (int i = 0; i < SYNC_KEY_LEN; i++) {
        invite.share_key[i] = (uint8_t)(100 + i);
        invite.device_seed[i] = (uint8_t)(200 + i);
        invite.inviter_key[i] = (uint8_t)(7 * i);
        invite.relay_key[i] = (uint8_t)(11 * i);
    }
    snprintf(invite.relay_addr, sizeof(invite.relay_addr), "relay.example.org:7420");
    snprintf(invite.share_name, sizeof(invite.share_name), "notes");
    snprintf(invite.device_name, sizeof(invite.device_name), "laptop");
    snprintf(invite.inviter_name, sizeof(invite.inviter_name), "desktop");
    return invite;
}

static void test_round_trip(void)
{
    struct sync_invite invite = sample(), back;
    char text[SYNC_INVITE_TEXT_MAX];
    CHECK_INT(0, sync_invite_encode(text, sizeof(text), &invite));
    CHECK(strncmp(text, SYNC_INVITE_PREFIX, strlen(SYNC_INVITE_PREFIX)) == 0);
    for (const char *c = text; *c; c++) /* one word of URL-safe characters */
        CHECK(isalnum((unsigned char)*c) || *c == '-' || *c == '_');
    CHECK_INT(0, sync_invite_decode(&back, text));
    CHECK(memcmp(&back, &invite, sizeof(back)) == 0);
    char padded[SYNC_INVITE_TEXT_MAX + 8];
    snprintf(padded, sizeof(padded), "  %s\n", text);
    CHECK_INT(0, sync_invite_decode(&back, padded));
    CHECK(memcmp(&back, &invite, sizeof(back)) == 0);
    /* Too small a buffer. */
    CHECK_INT(-ENOSPC, sync_invite_encode(text, 20, &invite));
}

static void test_typos_and_cuts(void)
{
    struct sync_invite invite = sample(), back;
    char text[SYNC_INVITE_TEXT_MAX];
    CHECK_INT(0, sync_invite_encode(text, sizeof(text), &invite));
    size_t len = strlen(text), prefix = strlen(SYNC_INVITE_PREFIX);
    int caught = 0;
    for (size_t i = prefix; i < len; i++) {
        char saved = text[i];
        text[i] = saved == 'A' ? 'B' : 'A';
        int rc = sync_invite_decode(&back, text);
        caught += rc == -EILSEQ || rc == -EBADMSG;
        CHECK(rc != 0);
        text[i] = saved;
    }
    CHECK_INT((int)(len - prefix), caught);
    for (size_t cut = prefix; cut < len; cut += 7) {
        char shorter[SYNC_INVITE_TEXT_MAX];
        memcpy(shorter, text, cut);
        shorter[cut] = '\0';
        CHECK(sync_invite_decode(&back, shorter) != 0);
    }
    CHECK_INT(-EBADMSG, sync_invite_decode(&back, "weft2-abc"));
    CHECK_INT(-EBADMSG, sync_invite_decode(&back, "hello"));
    CHECK_INT(-EBADMSG, sync_invite_decode(&back, ""));
    /* Nothing of a refused token is left behind. */
    uint8_t zero[sizeof(back)] = {0};
    CHECK(memcmp(&back, zero, sizeof(back)) == 0);
}

static void test_bad_fields(void)
{
    struct sync_invite invite = sample();
    char text[SYNC_INVITE_TEXT_MAX];
    invite.share_name[0] = '\0';
    CHECK_INT(-EINVAL, sync_invite_encode(text, sizeof(text), &invite));
    invite = sample();
    invite.device_name[2] = '\n';
    CHECK_INT(-EINVAL, sync_invite_encode(text, sizeof(text), &invite));
    invite = sample();
    memset(invite.relay_addr, 'r', SYNC_INVITE_ADDR_MAX);
    invite.relay_addr[SYNC_INVITE_ADDR_MAX] = '\0';
    CHECK_INT(0, sync_invite_encode(text, sizeof(text), &invite)); /* the longest fits */
    sync_invite_wipe(&invite);
    uint8_t zero[sizeof(invite)] = {0};
    CHECK(memcmp(&invite, zero, sizeof(invite)) == 0);
}

int main(void)
{
    CHECK_INT(0, sync_init());
    test_round_trip();
    test_typos_and_cuts();
    test_bad_fields();
    return test_finish("sync-invite");
}
