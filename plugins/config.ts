import fp from 'fastify-plugin'
import type { Config } from '../src/config.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

/** The validated configuration, for every other plugin. */
export default fp<{ config: Config }>(async (app, options) => {
  app.decorate('config', options.config)
}, { name: 'config', fastify: '5.x' })
