"""The live canvas page (/ui): plain HTML/JS/CSS shipped as package data, no build step, no CDN.

The page itself is public (it holds no data and asks for an API key when the server needs one); every
request it makes goes to the ordinary API with the key the user typed. All its URLs are relative, so it
works under --root-path and behind a path-prefixing proxy (the OpenShift Route).
"""
