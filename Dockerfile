# syntax=docker/dockerfile:1
# Build stage: dev dependencies and the TypeScript compiler. `npm ci` would run `prepare` (the build)
# before the sources are here: --ignore-scripts, then one `npm run build` once they are.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json app.ts server.ts ./
COPY src ./src
COPY plugins ./plugins
COPY routes ./routes
RUN npm run build

# Run stage: production dependencies and the compiled output only, as a non-root user.
FROM node:20-bookworm-slim
ENV NODE_ENV=production HOST=0.0.0.0 PORT=4000
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` builds, and this stage has neither tsc nor sources (dist/ comes from the
# build stage); no production dependency has an install script.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
USER node
EXPOSE 4000
# SIGTERM starts the drain (sockets closed with 1012 over DRAIN_WINDOW_MS); give it SHUTDOWN_TIMEOUT_MS.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||4000)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "dist/server.js"]
