// recond's mesh viewer: WebGL2, no dependencies, everything read from the page itself so it
// works from file:// with no network (Chromium refuses fetch/XHR on file:// pages).
"use strict";

function showFallback() {
  document.getElementById("stage").style.display = "none";
  document.getElementById("fallback").style.display = "flex";
  const video = document.querySelector("#fallback video");
  if (video) video.play().catch(() => {}); // muted, so browsers allow playing without a click
  document.documentElement.dataset.viewer = "fallback";
}

// Whatever goes wrong before the first frame (a driver refusing a shader, an undecodable
// texture), the visitor still gets the turntable rather than an empty page.
function fallBackUnlessShown() {
  if (document.documentElement.dataset.viewer !== "ready") showFallback();
}
window.addEventListener("error", fallBackUnlessShown);
window.addEventListener("unhandledrejection", fallBackUnlessShown);

(function () {
  const FOVY = (40 * Math.PI) / 180; // same field of view as the turntable renders
  const ELEVATION = (12 * Math.PI) / 180;
  const AUTO_ROTATE_RADIANS_PER_SECOND = 0.5;
  const BACKGROUND = [0.925, 0.937, 0.953];

  const mesh = JSON.parse(document.getElementById("mesh-data").textContent);
  const canvas = document.getElementById("view");
  const gl = canvas.getContext("webgl2", { antialias: true });
  if (!gl) {
    showFallback();
    return;
  }

  function decodeBase64(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  // ---- geometry ---------------------------------------------------------------------------
  const positions = new Float32Array(decodeBase64(mesh.positions).buffer);
  const normals = new Int8Array(decodeBase64(mesh.normals).buffer);
  const indexBytes = decodeBase64(mesh.indices);
  const indices = mesh.index_type === "uint16" ? new Uint16Array(indexBytes.buffer) : new Uint32Array(indexBytes.buffer);
  const indexGlType = mesh.index_type === "uint16" ? gl.UNSIGNED_SHORT : gl.UNSIGNED_INT;

  const vao = gl.createVertexArray();
  gl.bindVertexArray(vao);
  function attribute(location, data, size, type, normalized) {
    gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
    gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
    gl.enableVertexAttribArray(location);
    gl.vertexAttribPointer(location, size, type, normalized, 0, 0);
  }
  attribute(0, positions, 3, gl.FLOAT, false);
  attribute(1, normals, 3, gl.BYTE, true);
  if (mesh.uvs) attribute(2, new Float32Array(decodeBase64(mesh.uvs).buffer), 2, gl.FLOAT, false);
  else gl.vertexAttrib2f(2, 0, 0);
  if (mesh.colors) attribute(3, decodeBase64(mesh.colors), 3, gl.UNSIGNED_BYTE, true);
  else gl.vertexAttrib3f(3, 0.7, 0.7, 0.7);
  const triangleBuffer = gl.createBuffer();
  gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, triangleBuffer);
  gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, indices, gl.STATIC_DRAW);

  // The wireframe is built on first use: unique edges of all triangles, drawn as lines.
  let edgeBuffer = null;
  let edgeCount = 0;
  function buildEdges() {
    const seen = new Set();
    const edges = [];
    const vertexCount = positions.length / 3;
    for (let t = 0; t < indices.length; t += 3) {
      for (let k = 0; k < 3; k++) {
        const a = indices[t + k];
        const b = indices[t + ((k + 1) % 3)];
        const key = a < b ? a * vertexCount + b : b * vertexCount + a;
        if (!seen.has(key)) {
          seen.add(key);
          edges.push(a, b);
        }
      }
    }
    edgeBuffer = gl.createBuffer();
    gl.bindVertexArray(vao);
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, edgeBuffer);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, new Uint32Array(edges), gl.STATIC_DRAW);
    edgeCount = edges.length;
  }

  // ---- shaders ----------------------------------------------------------------------------
  const vertexSource = `#version 300 es
    layout(location = 0) in vec3 a_position;
    layout(location = 1) in vec3 a_normal;
    layout(location = 2) in vec2 a_uv;
    layout(location = 3) in vec3 a_color;
    uniform mat4 u_view_projection;
    out vec3 v_position; out vec3 v_normal; out vec2 v_uv; out vec3 v_color;
    void main() {
      v_position = a_position; v_normal = a_normal; v_uv = a_uv; v_color = a_color;
      gl_Position = u_view_projection * vec4(a_position, 1.0);
    }`;
  // Mostly the baked colour plus a soft headlight, matching the turntable renders.
  const fragmentSource = `#version 300 es
    precision highp float;
    in vec3 v_position; in vec3 v_normal; in vec2 v_uv; in vec3 v_color;
    uniform sampler2D u_texture;
    uniform bool u_textured;
    uniform bool u_lines;
    uniform vec3 u_eye;
    uniform vec3 u_light;
    out vec4 out_color;
    void main() {
      if (u_lines) { out_color = vec4(0.12, 0.16, 0.22, 1.0); return; }
      // Texture rows start at the top of the image while UV v points up.
      vec3 albedo = u_textured ? texture(u_texture, vec2(v_uv.x, 1.0 - v_uv.y)).rgb : v_color;
      vec3 normal = normalize(v_normal);
      if (dot(normal, u_eye - v_position) < 0.0) normal = -normal;
      float shade = 0.62 + 0.38 * max(dot(normal, u_light), 0.0);
      out_color = vec4(albedo * shade, 1.0);
    }`;

  function compile(type, source) {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
    return shader;
  }
  const program = gl.createProgram();
  gl.attachShader(program, compile(gl.VERTEX_SHADER, vertexSource));
  gl.attachShader(program, compile(gl.FRAGMENT_SHADER, fragmentSource));
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
  gl.useProgram(program);
  const uniform = (name) => gl.getUniformLocation(program, name);
  const u = {
    viewProjection: uniform("u_view_projection"), textured: uniform("u_textured"), lines: uniform("u_lines"),
    eye: uniform("u_eye"), light: uniform("u_light"), texture: uniform("u_texture"),
  };
  gl.uniform1i(u.texture, 0);
  gl.uniform1i(u.textured, 0);

  // The texture is embedded as image bytes and decoded from a Blob: same-origin by
  // construction, so WebGL accepts it even on a file:// page.
  let textureReady = Promise.resolve();
  if (mesh.texture) {
    const blob = new Blob([decodeBase64(mesh.texture)], { type: mesh.texture_type });
    textureReady = createImageBitmap(blob).then((bitmap) => {
      gl.bindTexture(gl.TEXTURE_2D, gl.createTexture());
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB8, gl.RGB, gl.UNSIGNED_BYTE, bitmap);
      gl.generateMipmap(gl.TEXTURE_2D);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR_MIPMAP_LINEAR);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
      gl.uniform1i(u.textured, 1);
    });
  }

  // ---- small matrix helpers (column-major, like WebGL) ------------------------------------
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const normalize = (a) => { const n = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / n, a[1] / n, a[2] / n]; };

  function viewProjection(eye, target, aspect, near, far) {
    const forward = normalize(sub(target, eye));
    const right = normalize(cross(forward, [0, 1, 0]));
    const up = cross(right, forward);
    const f = 1 / Math.tan(FOVY / 2);
    const p = [f / aspect, f, (far + near) / (near - far), (2 * far * near) / (near - far)];
    const view = [
      right[0], up[0], -forward[0], 0,
      right[1], up[1], -forward[1], 0,
      right[2], up[2], -forward[2], 0,
      -dot(right, eye), -dot(up, eye), dot(forward, eye), 1,
    ];
    const out = new Float32Array(16);
    for (let c = 0; c < 4; c++) {
      out[c * 4 + 0] = p[0] * view[c * 4 + 0];
      out[c * 4 + 1] = p[1] * view[c * 4 + 1];
      out[c * 4 + 2] = p[2] * view[c * 4 + 2] + p[3] * view[c * 4 + 3];
      out[c * 4 + 3] = -view[c * 4 + 2];
    }
    return { matrix: out, right, up, forward };
  }

  // ---- camera: orbit around a target, yaw 0 looks from +X like turntable frame 0 ----------
  const radius = mesh.radius;
  // zoom 1 fits the bounding sphere in the narrower of the two fields of view.
  const home = () => ({ target: mesh.center.slice(), yaw: 0, pitch: ELEVATION, zoom: 1 });
  let camera = home();
  let autoRotate = true;
  let wireframe = false;
  let axes = null;

  let distance = 1;

  function fitDistance(aspect) {
    const fov = Math.min(FOVY, 2 * Math.atan(Math.tan(FOVY / 2) * aspect));
    return (1.08 * radius) / Math.sin(fov / 2);
  }

  function eyePosition() {
    const c = Math.cos(camera.pitch);
    return [
      camera.target[0] + distance * c * Math.cos(camera.yaw),
      camera.target[1] + distance * Math.sin(camera.pitch),
      camera.target[2] - distance * c * Math.sin(camera.yaw),
    ];
  }

  function draw() {
    const scale = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * scale));
    const height = Math.max(1, Math.round(canvas.clientHeight * scale));
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
    gl.viewport(0, 0, width, height);
    gl.clearColor(BACKGROUND[0], BACKGROUND[1], BACKGROUND[2], 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);

    distance = camera.zoom * fitDistance(width / height);
    const eye = eyePosition();
    const near = Math.max(distance - 2 * radius, distance * 0.01);
    const frameCamera = viewProjection(eye, camera.target, width / height, near, distance + 2 * radius);
    axes = frameCamera;
    const light = normalize([
      -frameCamera.forward[0] + 0.45 * frameCamera.up[0] - 0.3 * frameCamera.right[0],
      -frameCamera.forward[1] + 0.45 * frameCamera.up[1] - 0.3 * frameCamera.right[1],
      -frameCamera.forward[2] + 0.45 * frameCamera.up[2] - 0.3 * frameCamera.right[2],
    ]);
    // Centre the model in the space the panel leaves free (a lens shift): right of it on
    // wide windows, above it when it is a strip along the bottom (phones).
    const panel = document.getElementById("panel").getBoundingClientRect();
    let shiftX = 0;
    let shiftY = 0;
    if (canvas.clientWidth > 2.5 * panel.right) shiftX = panel.right / canvas.clientWidth;
    else if (panel.top > canvas.clientHeight / 2) shiftY = 1 - panel.top / canvas.clientHeight;
    for (let c = 0; c < 4; c++) {
      frameCamera.matrix[c * 4] += shiftX * frameCamera.matrix[c * 4 + 3];
      frameCamera.matrix[c * 4 + 1] += shiftY * frameCamera.matrix[c * 4 + 3];
    }
    gl.uniformMatrix4fv(u.viewProjection, false, frameCamera.matrix);
    gl.uniform3fv(u.eye, eye);
    gl.uniform3fv(u.light, light);
    gl.bindVertexArray(vao);

    gl.uniform1i(u.lines, 0);
    gl.enable(gl.POLYGON_OFFSET_FILL);
    gl.polygonOffset(1, 1); // keeps the wireframe in front of its own faces
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, triangleBuffer);
    gl.drawElements(gl.TRIANGLES, indices.length, indexGlType, 0);
    gl.disable(gl.POLYGON_OFFSET_FILL);
    if (wireframe) {
      if (!edgeBuffer) buildEdges();
      gl.uniform1i(u.lines, 1);
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, edgeBuffer);
      gl.drawElements(gl.LINES, edgeCount, gl.UNSIGNED_INT, 0);
    }
  }

  // ---- interaction ------------------------------------------------------------------------
  let drag = null;
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX, y: event.clientY, pan: event.button === 2 || event.shiftKey };
    canvas.setPointerCapture(event.pointerId);
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    drag.x = event.clientX;
    drag.y = event.clientY;
    if (drag.pan && axes) {
      // One pixel moves the target by one pixel's worth of the view at the target's depth.
      const perPixel = (2 * distance * Math.tan(FOVY / 2)) / canvas.clientHeight;
      for (let i = 0; i < 3; i++) camera.target[i] += (-dx * axes.right[i] + dy * axes.up[i]) * perPixel;
    } else {
      camera.yaw -= dx * 0.008;
      camera.pitch = Math.min(1.5, Math.max(-1.5, camera.pitch + dy * 0.008));
    }
    requestDraw();
  });
  const endDrag = () => { drag = null; canvas.classList.remove("dragging"); };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    camera.zoom = Math.min(8, Math.max(0.1, camera.zoom * Math.exp(event.deltaY * 0.0015)));
    requestDraw();
  }, { passive: false });

  function toggle(button, value) {
    button.setAttribute("aria-pressed", String(value));
    requestDraw();
    return value;
  }
  const rotateButton = document.getElementById("rotate");
  rotateButton.addEventListener("click", () => { autoRotate = toggle(rotateButton, !autoRotate); });
  const wireButton = document.getElementById("wireframe");
  wireButton.addEventListener("click", () => { wireframe = toggle(wireButton, !wireframe); });
  document.getElementById("reset").addEventListener("click", () => { camera = home(); requestDraw(); });
  window.addEventListener("resize", () => requestDraw());

  // ---- frame loop: redraw while rotating, otherwise only when something changed -----------
  let pending = false;
  let lastTime = null;
  function frame(time) {
    pending = false;
    if (autoRotate && !drag && lastTime !== null) camera.yaw += ((time - lastTime) / 1000) * AUTO_ROTATE_RADIANS_PER_SECOND;
    lastTime = time;
    draw();
    if (autoRotate) requestDraw();
    else lastTime = null;
  }
  function requestDraw() {
    if (!pending) { pending = true; requestAnimationFrame(frame); }
  }

  textureReady.then(() => {
    draw();
    document.documentElement.dataset.viewer = "ready";
    requestDraw();
  });
})();
