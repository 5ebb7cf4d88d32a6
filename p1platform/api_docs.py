"""/v1/docs: Swagger UI within the site's Content-Security-Policy (docs/adr/0004).

Its own module: the schema class (p1common.openapi) is loaded by drf-spectacular's
views module, so it must not import that module back.
"""

from __future__ import annotations

from drf_spectacular.views import SpectacularSwaggerSplitView


class DocsView(SpectacularSwaggerSplitView):
    """Swagger UI from our static files; its start script is a separate request, so the
    page needs no inline script, and our template drops the inline <style>."""

    template_name = "api/swagger_ui.html"
