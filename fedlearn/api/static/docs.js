// The API reference over this server's own /openapi.json (Swagger UI, vendored: works offline).
// No validator badge: it would send the document to a third-party server.
/* global SwaggerUIBundle */
window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: false,
  persistAuthorization: false, // a token typed into "Authorize" is not kept in localStorage
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});
