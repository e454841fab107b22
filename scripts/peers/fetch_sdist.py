#!/usr/bin/env python3
"""Download a package's source distribution from PyPI's simple index without building
anything (pip download --no-binary would build the sdist's build tools from source):

    fetch_sdist.py PACKAGE VERSION DEST_DIR   -> prints the downloaded path
"""
import hashlib
import os
import re
import sys
import urllib.request

name, version, dest = sys.argv[1:4]
index = urllib.request.urlopen(f"https://pypi.org/simple/{name}/").read().decode()
wanted = f"{name.replace('-', '_')}-{version}.tar.gz"
for href in re.findall(r'href="([^"]+)"', index):
    url, _, frag = href.partition("#")
    if url.endswith("/" + wanted):
        os.makedirs(dest, exist_ok=True)
        path = os.path.join(dest, wanted)
        if not os.path.exists(path):
            data = urllib.request.urlopen(url).read()
            algo, _, digest = frag.partition("=")
            if algo and hashlib.new(algo, data).hexdigest() != digest:
                sys.exit(f"{wanted}: {algo} mismatch")
            with open(path + ".part", "wb") as f:
                f.write(data)
            os.replace(path + ".part", path)
        print(path)
        break
else:
    sys.exit(f"no sdist {wanted} on PyPI")
