/*
 * weft-relay-test: `weft relay` as a program of its own, for the tests
 * (tests/sync/test_relay_main.c), until the `weft` command wires it in.
 */
#include "sync/relay.h"

int main(int argc, char **argv)
{
    return sync_relay_main(argc, argv);
}
