#!/usr/bin/env bash
echo "cli e2e: not written yet"
