#!/bin/sh
# Deliberately empty: the cost of running this is the cost of Attune plus a shell.
exit 0
