// The terminal's heavy parts, a chunk of their own (terminal.tsx imports it when opened).
export { Terminal as XTerm } from "@xterm/xterm";
export { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
