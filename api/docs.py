"""`/docs`: Swagger UI from the packaged `swagger-ui-bundle` files (no CDN: it works offline), able to send the
API token.

The page and its assets hold no data, so they load without a token. The schema (`/openapi.json`) needs one when
tokens are configured: the page then asks for it once, keeps it in the browser's localStorage, and sends it as
`Authorization: Bearer` with every request, the schema's included (a `requestInterceptor`). The schema's bearer
scheme also gives Swagger UI its "Authorize" button, and `persistAuthorization` keeps what is entered there.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

router = APIRouter(include_in_schema=False)

ASSETS = Path(swagger_ui_bundle.swagger_ui_path)
SERVED = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
TOKEN_KEY = "sweep-service-token"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sweep-service API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
const KEY = "__TOKEN_KEY__";
function withToken(headers) {
  const token = localStorage.getItem(KEY);
  if (token && !headers.Authorization) headers.Authorization = "Bearer " + token;
  return headers;
}
async function start() {
  let r = await fetch("/openapi.json", {headers: withToken({})});
  while (r.status === 401) {
    const token = window.prompt("This API needs a token (SWEEP_API_TOKEN or a read token):");
    if (!token) return;
    localStorage.setItem(KEY, token);
    r = await fetch("/openapi.json", {headers: withToken({})});
  }
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    persistAuthorization: true,
    requestInterceptor: (request) => { withToken(request.headers); return request; },
  });
}
start();
</script>
</body>
</html>
""".replace("__TOKEN_KEY__", TOKEN_KEY)


@router.get("/docs")
def docs_page() -> HTMLResponse:
    return HTMLResponse(PAGE)


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> FileResponse:
    if name not in SERVED:
        raise HTTPException(404, detail=f"no docs asset {name[:100]!r}")
    return FileResponse(ASSETS / name)
