import { createApp } from 'vue'
import App from './App.vue'
import './style.css'
import { resume } from './store'

resume()
createApp(App).mount('#app')
