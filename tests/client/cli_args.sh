#!/usr/bin/env bash
# One way to parse arguments: every command answers --help on stdout with
# exit 0, and an unknown option, a missing value or a stray operand with
# "cloister CMD: message (see 'cloister CMD --help')" and exit 2, before it
# opens any file or network connection.
. "$(dirname "$0")/../integration/lib.sh"
CL=$1
cmds=(keygen seal unseal inspect "attest show" "attest verify" tokenize run logits bench mkmodel
      "kms policy" "kms create-key" measure ask chat proxy "batch submit" "batch status" "batch result" "audit verify"
      "audit show")
for c in "${cmds[@]}"; do
  read -ra w <<<"$c"
  expect 0 "$c --help" "$CL" "${w[@]}" --help
  grep -q '^usage: cloister' "$cl_tmp/out" && ok "$c --help prints usage on stdout" || bad "$c --help: no usage on stdout"
  expect 0 "$c -h" "$CL" "${w[@]}" -h
  expect 2 "$c --no-such-option" "$CL" "${w[@]}" --no-such-option
  expect_err "^cloister $c: unknown option '--no-such-option' \\(see 'cloister $c --help'\\)\$" "$c names the unknown option"
  expect 2 "$c -Z" "$CL" "${w[@]}" -Z
  expect_err "^cloister $c: unknown option '-Z' \\(see 'cloister $c --help'\\)\$" "$c names the unknown short option"
done
# a value-taking option at the end: named, never read past argv
for c in "run:-p" "run:--prompt" "logits:--tokens" "bench:-p" "mkmodel:--arch" "tokenize:-f" "measure:--root" \
         "ask:--host" "chat:--trust" "attest verify:--root" "kms policy:--pcr0" "seal:-o" \
         "unseal:--key-file" "kms create-key:--kms" "keygen:-o" "proxy:--listen"; do
  cmd=${c%%:*} opt=${c#*:}
  read -ra w <<<"$cmd"
  expect 2 "$cmd $opt without a value" "$CL" "${w[@]}" "$opt"
  expect_err "^cloister $cmd: option '$opt' needs a value \\(see 'cloister $cmd --help'\\)\$" "$cmd names $opt"
done
# the shared -t/--threads check
for c in run logits bench mkmodel seal unseal; do
  expect 2 "$c -t 0" "$CL" "$c" -t 0
  expect_err "^cloister $c: -t needs a thread count in 1\\.\\." "$c: -t range"
  expect 2 "$c --threads x" "$CL" "$c" --threads x
done
# operands: one model, one DOC; values that start with '-' stay values
expect 2 "run with two models" "$CL" run a.gguf b.gguf -p hi
expect_err "unexpected argument 'b.gguf'" "run names the extra operand"
expect 2 "attest show with two docs" "$CL" attest show a b
expect_err "more than one DOC given" "attest show: one DOC"
expect 1 "run -p takes a value that starts with '-'" "$CL" run "$cl_tmp/none.gguf" -p -x
expect_err "^cloister run: reading model file" "run went on to the model with -p -x"
expect 2 "-- ends the options" "$CL" run -- -p
expect_err "missing -p TEXT|unexpected argument" "after --, -p is an operand"
finish
