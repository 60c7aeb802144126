export * from './types.ts';
export * from './units.ts';
export * from './docker-hub.ts';
export { ConfigError, loadConfig, parseConfigText, validateConfig, parseListen, formatListen, parseLogLevel, LOG_LEVELS, DEFAULT_CONFIG_PATH } from './load.ts';
export { readDockerConfig, authsKeyHost, helperServerUrl } from './docker-config.ts';
