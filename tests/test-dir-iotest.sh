#!/usr/bin/env bash
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# The random I/O model checker against r3map-dir: 10,000 operations of
# random sizes and alignments over 4 parallel connections, then a
# restart of nbdkit and a full comparison of what was persisted with
# the model.  Two geometries: small chunks with a ragged end, and the
# default 64K chunks.

. "$srcdir/functions.sh"

run_geometry ()
{
    local name="$1" size="$2" chunk="$3" d="$tmp/$1"
    mkdir "$d"
    local ops=$(model_ops 10000)
    ok "$name: $ops random ops on 4 connections match the model" \
        nbdkit -U - "$(plugin dir)" "$d" size="$size" chunk-size="$chunk" \
            --run "$IOTEST --quiet --ops $ops --connections 4 \
                       --trim-reads-zero --model '$tmp/$name.model' \"\$uri\""
    ok "$name: the disk after a restart is the model's" \
        nbdkit -U - "$(plugin dir)" "$d" \
            --run "$IOTEST --quiet --verify-only --initial '$tmp/$name.model' \"\$uri\""
}

run_geometry small-chunks $((16 * 1024 * 1024 + 4095)) 4K
run_geometry default-chunks 32M 64K

done_testing
